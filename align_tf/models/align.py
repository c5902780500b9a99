"""AlignModel: both towers, the text projection, the temperature, and the contrastive objective."""

from __future__ import annotations

import keras
from keras import layers, ops

from align_tf.models import losses
from align_tf.configuration import AlignConfig
from align_tf.models.bert import AlignTextModel
from align_tf.models.efficientnet import AlignVisionModel, channels_last
from align_tf.models.inputs import ALIGN_INPUTS, finish, gather_inputs, wants_tower_outputs
from align_tf.models.normalize import l2_normalize  # noqa: F401  (public here too)
from align_tf.models.outputs import AlignOutput
from align_tf.models.pretrained import PretrainedMixin
from align_tf.errors import ConfigError



def _eager_tensorflow() -> bool:
    if keras.backend.backend() != "tensorflow":
        return False
    import tensorflow as tf

    return tf.executing_eagerly()


# What get_text_features takes: the text inputs (no pixel_values).
TEXT_FEATURE_INPUTS = tuple(k for k in ALIGN_INPUTS if k != "pixel_values")


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
    # Eager TensorFlow inference runs frozen graphs (align_tf.models.frozen); False: the Keras
    # layers' graph.
    frozen_inference = True

    def __init__(self, config: AlignConfig | dict | None = None, label_smoothing: float = 0.1,
                 min_temperature: float | None = None, gather_negatives: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.config = config = AlignConfig.coerce(config)
        self.label_smoothing = label_smoothing
        self.min_temperature = min_temperature
        # Negatives from the whole global batch (all replicas), as ALIGN trains; False is the
        # per-replica ablation.
        self.gather_negatives = gather_negatives
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
        # Running means of what `train_step` / `test_step` report (reset every epoch by Keras).
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.image_to_text_accuracy = keras.metrics.Mean(name="image_to_text_accuracy")
        self.text_to_image_accuracy = keras.metrics.Mean(name="text_to_image_accuracy")

    def build(self, input_shape=None):
        self.text_model.build()
        self.vision_model.build()
        self.text_projection.build((None, self.config.text_config.hidden_size))
        self.built = True

    def reset_inference_graphs(self):
        """Drop the frozen inference graphs: the next inference call snapshots the weights
        again. Needed only after assigning variables by hand (`load_weights`, `set_weights`,
        checkpoint loading and optimizer steps do it themselves)."""
        self.__dict__["_weights_generation"] = self.__dict__.get("_weights_generation", 0) + 1

    def load_weights(self, *args, **kwargs):
        try:
            return super().load_weights(*args, **kwargs)
        finally:
            self.reset_inference_graphs()

    def set_weights(self, weights):
        try:
            return super().set_weights(weights)
        finally:
            self.reset_inference_graphs()

    # -- features -------------------------------------------------------------------------
    def get_image_features(self, pixel_values=None, training=False, *, output_hidden_states=None,
                           return_dict=None, data_format=None):
        """Pooled trunk output [N, projection_dim], not normalised (HF `get_image_features`).

        With `return_dict` or `output_hidden_states`, the vision tower's output instead (as
        transformers 5 returns it: `.pooler_output` holds the features); `return_dict=False`
        gives its tuple. Called eagerly under TensorFlow for inference without those, it runs
        one compiled graph (align_tf.models.compiled) instead of op-by-op."""
        inputs = gather_inputs("get_image_features", pixel_values, "pixel_values", ("pixel_values",), {})
        if "pixel_values" not in inputs:
            raise ConfigError("get_image_features needs pixel_values")
        vision = self.vision_model
        pixel_values = channels_last(inputs["pixel_values"], data_format, vision.config.num_channels)
        if wants_tower_outputs(return_dict, output_hidden_states, False):
            return finish(vision.encode(pixel_values, training=training,
                                        output_hidden_states=output_hidden_states,
                                        data_format="channels_last"), return_dict)
        if not training and _eager_tensorflow():
            from align_tf.models import compiled as inference

            return inference.run_image_features(self, pixel_values)
        return vision(pixel_values, training=training, data_format="channels_last")["pooler_output"]

    def get_text_features(self, input_ids=None, attention_mask=None, token_type_ids=None,
                          position_ids=None, inputs_embeds=None, training=False, *, head_mask=None,
                          output_attentions=None, output_hidden_states=None, return_dict=None):
        """Projected [CLS] state [M, projection_dim], not normalised (HF `get_text_features`).

        Takes the reference's arguments (or one dict of them). With `return_dict`,
        `output_hidden_states` or `output_attentions`, the text tower's output with
        `.pooler_output` = the projected features (transformers 5's return value) instead."""
        inputs = gather_inputs("get_text_features", input_ids, "input_ids", TEXT_FEATURE_INPUTS, dict(
            attention_mask=attention_mask, token_type_ids=token_type_ids, position_ids=position_ids,
            inputs_embeds=inputs_embeds, head_mask=head_mask))
        return self._text_features(inputs, training, output_attentions, output_hidden_states,
                                   return_dict)

    def _text_features(self, inputs, training=False, output_attentions=None,
                       output_hidden_states=None, return_dict=None):
        plain = set(inputs) <= {"input_ids", "attention_mask", "token_type_ids"}
        if wants_tower_outputs(return_dict, output_hidden_states, output_attentions):
            text = self.text_model.encode(**inputs, training=training,
                                          output_attentions=output_attentions,
                                          output_hidden_states=output_hidden_states)
            text["pooler_output"] = self.text_projection(text["last_hidden_state"][:, 0])
            return finish(text, return_dict)
        if plain and not training and _eager_tensorflow():
            from align_tf.models import compiled as inference

            return inference.run_text_features(self, inputs["input_ids"], inputs.get("attention_mask"),
                                               inputs.get("token_type_ids"))
        text = self.text_model.encode(**inputs, training=training)
        return self.text_projection(text["last_hidden_state"][:, 0])

    def effective_temperature(self):
        if self.min_temperature is None:
            return self.temperature
        return ops.maximum(self.temperature, self.min_temperature)

    def call(self, input_ids=None, pixel_values=None, attention_mask=None, token_type_ids=None,
             position_ids=None, inputs_embeds=None, return_loss=None, training=False, *,
             head_mask=None, output_attentions=None, output_hidden_states=None, return_dict=None,
             data_format=None):
        """transformers' `AlignModel.forward`: the same arguments, positionally in the same order,
        as keywords, or as one dict (what fit() and predict() pass). Returns an AlignOutput
        (a dict with attribute access) of what the inputs allow: `image_embeds`, `text_embeds`
        (L2-normalised) and, with both, `logits_per_text` [M, N] and `logits_per_image` [N, M];
        `loss` with `return_loss=True`. The towers' outputs (`text_model_output`,
        `vision_model_output`) are computed only when asked for: `return_dict=True`,
        `output_hidden_states` or `output_attentions`. `return_dict=False` gives the
        reference's tuple."""
        inputs = gather_inputs(type(self).__name__, input_ids, "input_ids", ALIGN_INPUTS, dict(
            pixel_values=pixel_values, attention_mask=attention_mask, token_type_ids=token_type_ids,
            position_ids=position_ids, inputs_embeds=inputs_embeds, head_mask=head_mask))
        return self.forward(inputs, return_loss=return_loss, training=training,
                            output_attentions=output_attentions,
                            output_hidden_states=output_hidden_states, return_dict=return_dict,
                            data_format=data_format)

    def forward(self, inputs: dict, return_loss=None, training=False, output_attentions=None,
                output_hidden_states=None, return_dict=None, data_format=None) -> AlignOutput:
        """`call` on gathered inputs ({name: value}, see align_tf.models.inputs)."""
        towers = wants_tower_outputs(return_dict, output_hidden_states, output_attentions)
        text_inputs = {k: v for k, v in inputs.items() if k != "pixel_values"}
        has_text = "input_ids" in inputs or "inputs_embeds" in inputs
        if text_inputs and not has_text:
            raise ConfigError(f"{', '.join(sorted(text_inputs))} given without input_ids or inputs_embeds")
        outputs = AlignOutput()
        if "pixel_values" in inputs:
            image = self.get_image_features(inputs["pixel_values"], training=training,
                                            output_hidden_states=output_hidden_states,
                                            return_dict=True if towers else None,
                                            data_format=data_format)
            if towers:
                vision_output, image = image, image["pooler_output"]
            outputs["image_embeds"] = l2_normalize(image)
        if has_text:
            text = self._text_features(text_inputs, training, output_attentions,
                                       output_hidden_states, True if towers else None)
            if towers:
                text_output, text = text, text.pop("pooler_output")
                if self.text_model.pooler is not None:  # the tower's own (tanh) pooler, as HF returns
                    text_output["pooler_output"] = ops.tanh(self.text_model.pooler(
                        text_output["last_hidden_state"][:, 0]))
                text_output = type(text_output)(
                    (k, text_output[k]) for k in text_output.fields if k in text_output)
            outputs["text_embeds"] = l2_normalize(text)
        if "image_embeds" in outputs and "text_embeds" in outputs:
            logits_per_text = ops.matmul(outputs["text_embeds"],
                                         ops.transpose(outputs["image_embeds"]))
            logits_per_text = logits_per_text / self.effective_temperature()
            outputs["logits_per_text"] = logits_per_text
            outputs["logits_per_image"] = ops.transpose(logits_per_text)
        elif return_loss:
            raise ConfigError("return_loss=True needs both images (pixel_values) and texts")
        if return_loss:
            n_text, n_image = outputs["text_embeds"].shape[0], outputs["image_embeds"].shape[0]
            if None not in (n_text, n_image) and n_text != n_image:
                raise ConfigError(f"return_loss=True needs matching pairs (text i goes with image i): "
                                 f"got {n_text} texts and {n_image} images")
            outputs["loss"] = self.contrastive_loss(outputs)
        ordered = AlignOutput((k, outputs[k]) for k in AlignOutput.fields if k in outputs)
        if towers:
            if has_text:
                ordered["text_model_output"] = text_output
            if "pixel_values" in inputs:
                ordered["vision_model_output"] = vision_output
        return finish(ordered, return_dict)

    def contrastive_loss(self, outputs):
        """The reference loss (`return_loss=True`) for one batch of matching pairs."""
        return losses.align_loss(outputs["logits_per_text"], self.label_smoothing)

    # -- training: model.fit / model.evaluate (TensorFlow backend) -------------------------
    # Each replica embeds its share of the batch, gathers every replica's embeddings
    # (align_tf.models.distributed, TF-only, imported here so the towers stay backend-free)
    # and scores its own rows against the global batch.
    def _replica_contrastive_loss(self, data, training: bool):
        from align_tf.models.distributed import GlobalBatch

        inputs = gather_inputs(type(self).__name__, keras.utils.unpack_x_y_sample_weight(data)[0],
                               "input_ids", ALIGN_INPUTS, {})
        # A frozen tower runs in inference mode: BatchNorm keeps its statistics, no dropout.
        image = l2_normalize(self.get_image_features(
            inputs["pixel_values"], training=training and self.vision_model.trainable))
        text = l2_normalize(self._text_features(
            {k: v for k, v in inputs.items() if k != "pixel_values"},
            training=training and self.text_model.trainable))
        batch = GlobalBatch(text, image, gather=self.gather_negatives)
        loss, text_to_image, image_to_text, labels = losses.local_contrastive_loss(
            text, image, batch.text_embeds, batch.image_embeds, self.effective_temperature(),
            batch.offset, self.label_smoothing)
        return loss, batch.share, text_to_image, image_to_text, labels

    def _step_logs(self, loss, text_to_image, image_to_text, labels):
        from align_tf.models.distributed import logs_for_keras

        def accuracy(logits):
            hits = ops.equal(ops.cast(ops.argmax(logits, axis=-1), "int32"), labels)
            return ops.mean(ops.cast(hits, "float32"))

        self.loss_tracker.update_state(loss)
        self.image_to_text_accuracy.update_state(accuracy(image_to_text))
        self.text_to_image_accuracy.update_state(accuracy(text_to_image))
        logs = {metric.name: metric.result() for metric in self.metrics}
        logs["temperature"] = ops.convert_to_tensor(self.effective_temperature())
        return logs_for_keras(logs)

    def train_step(self, data):
        import tensorflow as tf

        variables = self.trainable_variables
        with tf.GradientTape() as tape:
            loss, share, text_to_image, image_to_text, labels = self._replica_contrastive_loss(
                data, training=True)
            total = loss + ops.sum(self.losses) if self.losses else loss
            # The optimizer sums gradients over replicas: weighting each replica's mean by its
            # share of the global batch makes the step equal the single-device step.
            scaled = self.optimizer.scale_loss(total * share)  # loss scaling under mixed_float16
        gradients = tape.gradient(scaled, variables)
        # Weights outside the contrastive path (BERT's pooler) get no gradient: skip them.
        pairs = [(g, v) for g, v in zip(gradients, variables) if g is not None]
        self.optimizer.apply([g for g, _ in pairs], [v for _, v in pairs])
        return self._step_logs(loss, text_to_image, image_to_text, labels)

    def test_step(self, data):
        loss, _, text_to_image, image_to_text, labels = self._replica_contrastive_loss(
            data, training=False)
        return self._step_logs(loss, text_to_image, image_to_text, labels)

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # Keras's version needs a sample batch and breaks on dict batches under
        # MultiWorkerMirroredStrategy; this model builds from its config (see build_for_fit).
        # Always, so the optimizer's variables are the same in a fresh and a resumed run.
        from align_tf.models.distributed import build_for_fit

        build_for_fit(self)

    @property
    def metrics(self):
        return [self.loss_tracker, self.image_to_text_accuracy, self.text_to_image_accuracy]

    def get_config(self):
        return {"config": self.config.to_dict(), "label_smoothing": self.label_smoothing,
                "min_temperature": self.min_temperature,
                "gather_negatives": self.gather_negatives, "name": self.name}

    @classmethod
    def from_config(cls, config):
        return cls(**config)
