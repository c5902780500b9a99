"""AlignModel: both towers, the text projection, the temperature, and the contrastive objective."""

from __future__ import annotations

import keras
from keras import layers, ops

from align_tf import losses
from align_tf.configuration import AlignConfig
from align_tf.models.bert import AlignTextModel
from align_tf.models.efficientnet import AlignVisionModel
from align_tf.models.pretrained import PretrainedMixin

TEXT_KEYS = ("input_ids", "attention_mask", "token_type_ids")


def l2_normalize(x):
    x = ops.cast(x, "float32")
    return x / ops.sqrt(ops.sum(ops.square(x), axis=-1, keepdims=True))


@keras.saving.register_keras_serializable(package="align_tf")
class AlignModel(PretrainedMixin, keras.Model):
    """ALIGN dual encoder.

    `model(inputs)` with `pixel_values` (NHWC float32 in [-1, 1]) and/or `input_ids`,
    `attention_mask`, `token_type_ids` returns a dict: `image_embeds`, `text_embeds`
    (L2-normalised, float32) and, when both are given, `logits_per_text` [M, N] and
    `logits_per_image` [N, M] = embeddings' cosine similarity / temperature.
    """

    config_class = AlignConfig
    checkpoint_prefix = ""

    def __init__(self, config: AlignConfig | dict | None = None, label_smoothing: float = 0.1,
                 min_temperature: float | None = None, **kwargs):
        super().__init__(**kwargs)
        if config is None:
            config = AlignConfig()
        elif isinstance(config, dict):
            config = AlignConfig.from_dict(config)
        self.config = config
        self.label_smoothing = label_smoothing
        self.min_temperature = min_temperature
        self.text_model = AlignTextModel(config.text_config, name="text_model", dtype=self.dtype_policy)
        self.vision_model = AlignVisionModel(config.vision_config, name="vision_model",
                                             dtype=self.dtype_policy)
        self.text_projection = layers.Dense(
            config.projection_dim, kernel_initializer="glorot_uniform", name="text_projection",
            dtype=self.dtype_policy)
        # The raw temperature, divided by (not exp(logit_scale) as CLIP): as in the reference.
        self.temperature = self.add_weight(
            name="temperature", shape=(),
            initializer=keras.initializers.Constant(config.temperature_init_value),
            dtype="float32")

    def build(self, input_shape=None):
        self.text_model.build()
        self.vision_model.build()
        self.text_projection.build((None, self.config.text_config.hidden_size))
        self.built = True

    # -- features -------------------------------------------------------------------------
    def get_image_features(self, pixel_values, training=False):
        """Pooled trunk output [N, projection_dim], not normalised (HF `get_image_features`)."""
        return self.vision_model(pixel_values, training=training)["pooler_output"]

    def get_text_features(self, input_ids, attention_mask=None, token_type_ids=None, training=False):
        """Projected [CLS] state [M, projection_dim], not normalised (HF `get_text_features`)."""
        if isinstance(input_ids, dict):
            attention_mask = input_ids.get("attention_mask", attention_mask)
            token_type_ids = input_ids.get("token_type_ids", token_type_ids)
            input_ids = input_ids["input_ids"]
        text = self.text_model.call(input_ids, attention_mask=attention_mask,
                                    token_type_ids=token_type_ids, training=training)
        return self.text_projection(text["last_hidden_state"][:, 0])

    def effective_temperature(self):
        if self.min_temperature is None:
            return self.temperature
        return ops.maximum(self.temperature, self.min_temperature)

    def call(self, inputs, training=False):
        outputs = {}
        if "pixel_values" in inputs:
            image = self.get_image_features(inputs["pixel_values"], training=training)
            outputs["image_embeds"] = l2_normalize(image)
        if "input_ids" in inputs:
            text = self.get_text_features(inputs["input_ids"], inputs.get("attention_mask"),
                                          inputs.get("token_type_ids"), training=training)
            outputs["text_embeds"] = l2_normalize(text)
        if "image_embeds" in outputs and "text_embeds" in outputs:
            logits_per_text = ops.matmul(outputs["text_embeds"],
                                         ops.transpose(outputs["image_embeds"]))
            logits_per_text = logits_per_text / self.effective_temperature()
            outputs["logits_per_text"] = logits_per_text
            outputs["logits_per_image"] = ops.transpose(logits_per_text)
        return outputs

    def contrastive_loss(self, outputs):
        """The reference loss (`return_loss=True`) for one batch of matching pairs."""
        return losses.align_loss(outputs["logits_per_text"], self.label_smoothing)

    def get_config(self):
        return {"config": self.config.to_dict(), "label_smoothing": self.label_smoothing,
                "min_temperature": self.min_temperature, "name": self.name}

    @classmethod
    def from_config(cls, config):
        return cls(**config)
