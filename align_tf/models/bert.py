"""The text tower: BERT (post-LayerNorm, exact GELU, additive attention mask, absolute positions)."""

from __future__ import annotations

import keras
from keras import layers, ops

from align_tf.configuration import AlignTextConfig
from align_tf.models.activations import activation as _activation
from align_tf.models.inputs import TEXT_INPUTS, finish, gather_inputs
from align_tf.models.outputs import TextModelOutput
from align_tf.models.pretrained import PretrainedMixin
from align_tf.errors import ConfigError


def _dense(units, initializer_range, name, dtype):
    return layers.Dense(
        units, kernel_initializer=keras.initializers.TruncatedNormal(stddev=initializer_range),
        name=name, dtype=dtype,
    )


class AlignTextEmbeddings(layers.Layer):
    """word + position + token-type embeddings, LayerNorm, dropout."""

    def __init__(self, vocab_size, hidden_size, max_position_embeddings, type_vocab_size,
                 layer_norm_eps=1e-12, dropout=0.1, initializer_range=0.02, **kwargs):
        super().__init__(**kwargs)
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.max_position_embeddings = max_position_embeddings
        self.type_vocab_size = type_vocab_size
        self.layer_norm_eps = layer_norm_eps
        self.dropout_rate = dropout
        self.initializer_range = initializer_range
        init = keras.initializers.TruncatedNormal(stddev=initializer_range)
        self.word_embeddings = layers.Embedding(vocab_size, hidden_size, embeddings_initializer=init,
                                                name="word_embeddings", dtype=self.dtype_policy)
        self.position_embeddings = layers.Embedding(
            max_position_embeddings, hidden_size, embeddings_initializer=init,
            name="position_embeddings", dtype=self.dtype_policy)
        self.token_type_embeddings = layers.Embedding(
            type_vocab_size, hidden_size, embeddings_initializer=init,
            name="token_type_embeddings", dtype=self.dtype_policy)
        self.LayerNorm = layers.LayerNormalization(epsilon=layer_norm_eps, name="LayerNorm",
                                                   dtype=self.dtype_policy)
        self.dropout = layers.Dropout(dropout, dtype=self.dtype_policy)

    def build(self, input_shape):
        for layer in (self.word_embeddings, self.position_embeddings, self.token_type_embeddings):
            layer.build((None, None))
        self.LayerNorm.build((None, None, self.hidden_size))
        self.built = True

    def call(self, input_ids, token_type_ids, training=False, position_ids=None, inputs_embeds=None):
        """`inputs_embeds` [B, L, H] replaces the word-embedding lookup of `input_ids`;
        `position_ids` ([L], [1, L] or [B, L]) replace the default 0..L-1."""
        if inputs_embeds is None:
            inputs_embeds = self.word_embeddings(input_ids)
        if position_ids is None:
            position_ids = ops.expand_dims(ops.arange(ops.shape(inputs_embeds)[1], dtype="int32"), 0)
        x = ops.cast(inputs_embeds, self.compute_dtype) + self.token_type_embeddings(token_type_ids)
        x = x + self.position_embeddings(position_ids)
        return self.dropout(self.LayerNorm(x), training=training)

    def get_config(self):
        config = super().get_config()
        config.update(vocab_size=self.vocab_size, hidden_size=self.hidden_size,
                      max_position_embeddings=self.max_position_embeddings,
                      type_vocab_size=self.type_vocab_size, layer_norm_eps=self.layer_norm_eps,
                      dropout=self.dropout_rate, initializer_range=self.initializer_range)
        return config


class AlignTextLayer(layers.Layer):
    """One post-LayerNorm transformer encoder layer, with HF's sub-module names."""

    def __init__(self, hidden_size, num_attention_heads, intermediate_size, hidden_act="gelu",
                 layer_norm_eps=1e-12, hidden_dropout=0.1, attention_dropout=0.1,
                 initializer_range=0.02, **kwargs):
        super().__init__(**kwargs)
        self.hidden_size = hidden_size
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size
        self.hidden_act = hidden_act
        self.layer_norm_eps = layer_norm_eps
        self.hidden_dropout = hidden_dropout
        self.attention_dropout = attention_dropout
        self.initializer_range = initializer_range
        self.head_dim = hidden_size // num_attention_heads
        dt = self.dtype_policy
        self.query = _dense(hidden_size, initializer_range, "query", dt)
        self.key = _dense(hidden_size, initializer_range, "key", dt)
        self.value = _dense(hidden_size, initializer_range, "value", dt)
        self.attention_output_dense = _dense(hidden_size, initializer_range, "attention_output_dense", dt)
        self.attention_output_LayerNorm = layers.LayerNormalization(
            epsilon=layer_norm_eps, name="attention_output_LayerNorm", dtype=dt)
        self.intermediate_dense = _dense(intermediate_size, initializer_range, "intermediate_dense", dt)
        self.output_dense = _dense(hidden_size, initializer_range, "output_dense", dt)
        self.output_LayerNorm = layers.LayerNormalization(
            epsilon=layer_norm_eps, name="output_LayerNorm", dtype=dt)
        self.attention_probs_dropout = layers.Dropout(attention_dropout, dtype=dt)
        self.attention_output_dropout = layers.Dropout(hidden_dropout, dtype=dt)
        self.output_dropout = layers.Dropout(hidden_dropout, dtype=dt)
        self.activation = _activation(hidden_act)

    def build(self, input_shape):
        h = (None, None, self.hidden_size)
        for layer in (self.query, self.key, self.value, self.attention_output_dense,
                      self.attention_output_LayerNorm, self.intermediate_dense, self.output_LayerNorm):
            layer.build(h)
        self.output_dense.build((None, None, self.intermediate_size))
        self.built = True

    def _split_heads(self, x):
        batch, length = ops.shape(x)[0], ops.shape(x)[1]
        x = ops.reshape(x, (batch, length, self.num_attention_heads, self.head_dim))
        return ops.transpose(x, (0, 2, 1, 3))

    def call(self, hidden_states, attention_mask, training=False, head_mask=None):
        """`head_mask` [num_heads] multiplies each head's attention probabilities (0 drops the
        head), as transformers 4.x's BERT did."""
        # The mask stays an integer input: Keras would autocast a float bias to float16 under
        # mixed precision, and the -1e9 bias must be added in float32.
        attention_bias = attention_bias_from_mask(attention_mask)
        q = self._split_heads(self.query(hidden_states))
        k = self._split_heads(self.key(hidden_states))
        v = self._split_heads(self.value(hidden_states))
        scores = ops.matmul(q, ops.transpose(k, (0, 1, 3, 2))) * (self.head_dim ** -0.5)
        # Softmax in float32 (as the reference does) so mixed precision keeps the mask exact.
        scores = ops.cast(scores, "float32") + attention_bias
        probs = ops.cast(ops.softmax(scores, axis=-1), self.compute_dtype)
        probs = self.attention_probs_dropout(probs, training=training)
        if head_mask is not None:
            probs = probs * ops.reshape(ops.cast(head_mask, probs.dtype), (1, -1, 1, 1))
        context = ops.transpose(ops.matmul(probs, v), (0, 2, 1, 3))
        batch, length = ops.shape(context)[0], ops.shape(context)[1]
        context = ops.reshape(context, (batch, length, self.hidden_size))
        attn = self.attention_output_dropout(self.attention_output_dense(context), training=training)
        attn = self.attention_output_LayerNorm(attn + hidden_states)
        ffn = self.output_dense(self.activation(self.intermediate_dense(attn)))
        ffn = self.output_dropout(ffn, training=training)
        return self.output_LayerNorm(ffn + attn), probs

    def get_config(self):
        config = super().get_config()
        config.update(hidden_size=self.hidden_size, num_attention_heads=self.num_attention_heads,
                      intermediate_size=self.intermediate_size, hidden_act=self.hidden_act,
                      layer_norm_eps=self.layer_norm_eps, hidden_dropout=self.hidden_dropout,
                      attention_dropout=self.attention_dropout,
                      initializer_range=self.initializer_range)
        return config


def attention_bias_from_mask(attention_mask):
    """[B, L] 0/1 mask -> additive float32 bias [B, 1, 1, L] (0 where attended)."""
    mask = ops.cast(attention_mask, "float32")
    return ops.reshape((1.0 - mask) * -1e9, (ops.shape(mask)[0], 1, 1, ops.shape(mask)[1]))


@keras.saving.register_keras_serializable(package="align_tf")
class AlignTextModel(PretrainedMixin, keras.Model):
    """BERT encoder, called like transformers' AlignTextModel: `model(input_ids, attention_mask,
    token_type_ids, position_ids, inputs_embeds)`, keyword arguments, or one dict of them.
    Returns a TextModelOutput (last_hidden_state, pooler_output[, hidden_states][, attentions]),
    or its tuple with `return_dict=False`."""

    config_class = AlignTextConfig
    checkpoint_prefix = "text_model."

    def __init__(self, config: AlignTextConfig | dict | None = None, add_pooling_layer=True, **kwargs):
        super().__init__(**kwargs)
        self.config = config = AlignTextConfig.coerce(config)
        self.add_pooling_layer = add_pooling_layer
        c = config
        self.embeddings = AlignTextEmbeddings(
            c.vocab_size, c.hidden_size, c.max_position_embeddings, c.type_vocab_size,
            c.layer_norm_eps, c.hidden_dropout_prob, c.initializer_range,
            name="embeddings", dtype=self.dtype_policy)
        self.encoder_layers = [
            AlignTextLayer(c.hidden_size, c.num_attention_heads, c.intermediate_size, c.hidden_act,
                           c.layer_norm_eps, c.hidden_dropout_prob, c.attention_probs_dropout_prob,
                           c.initializer_range, name=f"layer_{i}", dtype=self.dtype_policy)
            for i in range(c.num_hidden_layers)
        ]
        self.pooler = (_dense(c.hidden_size, c.initializer_range, "pooler", self.dtype_policy)
                       if add_pooling_layer else None)

    def build(self, input_shape=None):
        self.embeddings.build((None, None))
        for layer in self.encoder_layers:
            layer.build((None, None, self.config.hidden_size))
        if self.pooler is not None:
            self.pooler.build((None, self.config.hidden_size))
        self.built = True

    def call(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
             inputs_embeds=None, training=False, *, head_mask=None, output_attentions=None,
             output_hidden_states=None, return_dict=None):
        inputs = gather_inputs(type(self).__name__, input_ids, "input_ids", TEXT_INPUTS, dict(
            attention_mask=attention_mask, token_type_ids=token_type_ids, position_ids=position_ids,
            inputs_embeds=inputs_embeds, head_mask=head_mask))
        return finish(self.encode(**inputs, training=training, output_attentions=output_attentions,
                                  output_hidden_states=output_hidden_states), return_dict)

    def encode(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
               inputs_embeds=None, head_mask=None, training=False, output_attentions=False,
               output_hidden_states=False) -> TextModelOutput:
        """The forward pass on already-gathered inputs (see `call`)."""
        if (input_ids is None) == (inputs_embeds is None):
            raise ConfigError("give exactly one of input_ids [batch, length] or inputs_embeds "
                             f"[batch, length, {self.config.hidden_size}]")
        if inputs_embeds is not None and inputs_embeds.shape[-1] not in (None, self.config.hidden_size):
            raise ConfigError(f"inputs_embeds must be [batch, length, {self.config.hidden_size}], "
                             f"got shape {tuple(inputs_embeds.shape)}")
        shape = ops.shape(input_ids if input_ids is not None else inputs_embeds)[:2]
        if attention_mask is None:
            attention_mask = ops.ones(shape, "int32")
        if token_type_ids is None:
            token_type_ids = ops.zeros(shape, "int32")
        x = self.embeddings(input_ids, token_type_ids, training=training, position_ids=position_ids,
                            inputs_embeds=inputs_embeds)
        attention_mask = ops.cast(attention_mask, "int32")
        head_masks = self.head_masks(head_mask)
        hidden_states, attentions = [x], []
        for layer, layer_head_mask in zip(self.encoder_layers, head_masks):
            x, probs = layer(x, attention_mask, training=training, head_mask=layer_head_mask)
            hidden_states.append(x)
            attentions.append(probs)
        outputs = TextModelOutput(last_hidden_state=x)
        if self.pooler is not None:
            outputs["pooler_output"] = ops.tanh(self.pooler(x[:, 0]))
        if output_hidden_states:
            outputs["hidden_states"] = tuple(hidden_states)
        if output_attentions:
            outputs["attentions"] = tuple(attentions)
        return outputs

    def head_masks(self, head_mask) -> list:
        """One [num_heads] mask (or None) per layer from a [num_heads] or [num_layers, num_heads] one."""
        layers_, heads = self.config.num_hidden_layers, self.config.num_attention_heads
        if head_mask is None:
            return [None] * layers_
        head_mask = ops.convert_to_tensor(head_mask)
        shape = tuple(head_mask.shape)
        if shape == (heads,):
            return [head_mask] * layers_
        if shape == (layers_, heads):
            return [head_mask[i] for i in range(layers_)]
        raise ConfigError(f"head_mask must be [num_heads] = [{heads}] or [num_layers, num_heads] = "
                         f"[{layers_}, {heads}], got shape {shape}")

    def get_config(self):
        return {"config": self.config.to_dict(), "add_pooling_layer": self.add_pooling_layer,
                "name": self.name}

    @classmethod
    def from_config(cls, config):
        return cls(**config)
