"""The image tower: the EfficientNet trunk exactly as the reference ALIGN builds it (no top conv)."""

from __future__ import annotations

import keras
from keras import layers, ops

from align_tf.configuration import AlignVisionConfig
from align_tf.models.activations import activation as _activation
from align_tf.models.inputs import VISION_INPUTS, finish, gather_inputs
from align_tf.models.outputs import VisionModelOutput
from align_tf.models.pretrained import PretrainedMixin
from align_tf.errors import ConfigError

DATA_FORMATS = ("channels_last", "channels_first")


def channels_last(pixel_values, data_format=None, num_channels: int = 3):
    """`pixel_values` as NHWC. NHWC is the default; NCHW (transformers' layout) is transposed
    when `data_format="channels_first"` says so, or when the shape leaves no doubt (channels
    on axis 1 and not on axis 3). A shape that fits both layouts raises instead of guessing."""
    if data_format not in (None, *DATA_FORMATS):
        raise ConfigError(f"data_format must be one of {DATA_FORMATS} or None, got {data_format!r}")
    shape = tuple(pixel_values.shape)
    if len(shape) != 4:
        raise ConfigError(f"pixel_values must be 4-D, [batch, height, width, {num_channels}] "
                         f"(or [batch, {num_channels}, height, width]), got shape {shape}")
    if data_format is None:
        first, last = shape[1] == num_channels, shape[3] == num_channels
        if first and last:
            raise ConfigError(
                f"pixel_values of shape {shape} fit both NHWC and NCHW; pass "
                "data_format='channels_last' or 'channels_first'")
        if first and shape[3] is None:
            raise ConfigError(f"cannot tell the layout of pixel_values of shape {shape}; pass "
                             "data_format='channels_last' or 'channels_first'")
        if not last and shape[3] is not None and not first:
            raise ConfigError(f"pixel_values must have {num_channels} channels last (NHWC) or "
                             f"first (NCHW), got shape {shape}")
        data_format = "channels_first" if first else "channels_last"
    if data_format == "channels_first":
        return ops.transpose(pixel_values, (0, 2, 3, 1))
    return pixel_values


def _conv_initializer():
    # EfficientNet's own initialiser (fan-out variance scaling) trains from scratch well;
    # pretrained weights overwrite it anyway.
    return keras.initializers.VarianceScaling(scale=2.0, mode="fan_out", distribution="truncated_normal")


def stride2_padding(kernel_size: int, adjust: bool = True) -> tuple[tuple[int, int], tuple[int, int]]:
    """((top, bottom), (left, right)) zero padding applied before a stride-2 `valid` conv.

    The reference pads (k//2 - 1, k//2) on each axis ("adjusted"), not TF's "same" split,
    which differs on odd input sizes.
    """
    half = kernel_size // 2
    pad = (half - 1, half) if adjust else (half, half)
    return (pad, pad)


def implicit_padding(size, pad, kernel_size, stride=2):
    """"same" / "valid" when a conv with that padding mode on an axis of static `size` reads
    exactly what `pad` = (before, after) zeros + a "valid" conv reads, else None.

    At 289x289 every stride-2 conv of the reference qualifies (the stem sees 289: "valid"; the
    depthwise convs see 144 / 72 / 36 / 18: "same"), so no padded copy of the activations is
    made (the largest is the 144x144x192 one: -110 MiB peak at batch 8, ~2% time).
    """
    if size is None:
        return None
    before, after = pad
    out = (size + before + after - kernel_size) // stride + 1
    if before == 0 and (size - kernel_size) // stride + 1 == out:
        return "valid"
    same_out = -(-size // stride)
    total = max((same_out - 1) * stride + kernel_size - size, 0)
    if same_out == out and (total // 2, total - total // 2) == (before, after):
        return "same"
    return None


def _padded(x, pad_layer, conv):
    """(input, padding mode) for `conv` after the explicit zero padding `pad_layer`."""
    (top, bottom), (left, right) = pad_layer.padding
    k, stride = conv.kernel_size[0], conv.strides[0]
    modes = {implicit_padding(x.shape[1], (top, bottom), k, stride),
             implicit_padding(x.shape[2], (left, right), k, stride)}
    if len(modes) == 1 and None not in modes:
        return x, modes.pop()
    return pad_layer(x), "valid"


def conv_bn(x, conv, bn, training, fold, activation=None, pad=None):
    """`activation(bn(conv(pad(x))))`; without `fold` (and in training on other backends than
    TensorFlow) the Keras layers as they are.

    Training with the TensorFlow backend: the same BatchNorm as Keras's layer (batch statistics,
    moving averages with Keras's momentum and biased batch variance) as one FusedBatchNormV3
    kernel forward and one backward, instead of Keras's chain of element-wise ops (the vision
    tower's forward + backward step is about 18% faster on a 2-core CPU).

    In inference with `fold` (the default), the fewest passes over the activations:
    - TensorFlow backend: `Conv2D -> FusedBatchNormV3 (inference) -> x * sigmoid(x)` for the
      regular convolutions, which TF's oneDNN graph rewrite runs as ONE fused kernel
      (`_FusedConv2D[FusedBatchNorm, _MklSwish]`): no folded copy of the kernel per call, and
      the same arithmetic as the reference's unfolded BatchNorm. Depthwise convolutions (tiny
      kernels, no BatchNorm fusion in TF) get BatchNorm folded into kernel and bias (`BiasAdd`,
      fused into the depthwise kernel).
    - other backends: BatchNorm folded into the kernel and a bias, with keras.ops.
    """
    act = _activation(activation) if activation else None
    # (FusedBatchNormV3 raises epsilon to at least 1.001e-5; smaller ones keep the Keras path.)
    fused_tf = keras.backend.backend() == "tensorflow" and bn.epsilon > 1.001e-5
    inference_tf = fused_tf and fold and not training
    if pad is not None and not inference_tf:
        x = pad(x)
    if training and bn.trainable and fused_tf:
        y = _tf_batch_norm_training(conv(x), bn)
        return act(y) if act else y
    if training or not fold:
        y = bn(conv(x), training=training)
        return act(y) if act else y
    swish = activation in ("swish", "silu")
    if inference_tf:
        x, padding = _padded(x, pad, conv) if pad is not None else (x, conv.padding)
        y = _tf_conv_bn_inference(x, conv, bn, padding)
    else:
        scale, bias = _folded_batch_norm(bn)
        if isinstance(conv, layers.DepthwiseConv2D):
            kernel = conv.kernel * ops.reshape(scale, (1, 1, -1, 1))
            y = ops.depthwise_conv(x, ops.cast(kernel, x.dtype), conv.strides, conv.padding)
        else:
            kernel = conv.kernel * scale
            y = ops.conv(x, ops.cast(kernel, x.dtype), conv.strides, conv.padding)
        y = y + ops.cast(bias, x.dtype)
    if act is None:
        return y
    # Written out (not keras' silu, whose custom gradient hides the pattern) so TF fuses it.
    return y * ops.sigmoid(y) if swish else act(y)


def _folded_batch_norm(bn):
    """Inference BatchNorm as a per-channel (scale, bias) to fold into the preceding conv."""
    scale = bn.gamma * ops.rsqrt(bn.moving_variance + bn.epsilon)
    return scale, bn.beta - bn.moving_mean * scale


def _tf_batch_norm_training(y, bn):
    """Keras `BatchNormalization(training=True)` semantics with TF's fused kernel."""
    import tensorflow as tf

    out, mean, variance = tf.compat.v1.nn.fused_batch_norm(
        y, ops.cast(bn.gamma, "float32"), ops.cast(bn.beta, "float32"),
        epsilon=bn.epsilon, is_training=True)
    # The kernel returns the Bessel-corrected variance; Keras's moving average uses the biased one.
    count = tf.cast(tf.reduce_prod(tf.shape(y)[:-1]), tf.float32)
    variance = variance * tf.maximum(count - 1.0, 0.0) / tf.maximum(count, 1.0)
    momentum = bn.momentum
    bn.moving_mean.assign(bn.moving_mean * momentum + mean * (1.0 - momentum))
    bn.moving_variance.assign(bn.moving_variance * momentum + variance * (1.0 - momentum))
    return out


def _tf_conv_bn_inference(x, conv, bn, padding):
    import tensorflow as tf  # TF backend only; models/ otherwise stays keras.ops

    if isinstance(conv, layers.DepthwiseConv2D):
        scale, bias = _folded_batch_norm(bn)
        kernel = ops.cast(conv.kernel * ops.reshape(scale, (1, 1, -1, 1)), x.dtype)
        y = tf.nn.depthwise_conv2d(x, kernel, (1, *conv.strides, 1), padding.upper())
        return tf.nn.bias_add(y, ops.cast(bias, x.dtype))
    y = tf.nn.conv2d(x, ops.cast(conv.kernel, x.dtype), conv.strides, padding.upper())
    # FusedBatchNormV3 keeps its statistics float32 also for float16 / bfloat16 activations.
    y, _, _ = tf.compat.v1.nn.fused_batch_norm(
        y, ops.cast(bn.gamma, "float32"), ops.cast(bn.beta, "float32"),
        ops.cast(bn.moving_mean, "float32"), ops.cast(bn.moving_variance, "float32"),
        epsilon=bn.epsilon, is_training=False)
    return y


class AlignVisionEmbeddings(layers.Layer):
    """Stem: pad (0, 1) bottom/right, 3x3 stride-2 valid conv, BatchNorm, activation."""

    def __init__(self, out_dim, batch_norm_eps=1e-3, batch_norm_momentum=0.99,
                 hidden_act="swish", **kwargs):
        super().__init__(**kwargs)
        self.out_dim = out_dim
        self.batch_norm_eps = batch_norm_eps
        self.batch_norm_momentum = batch_norm_momentum
        self.hidden_act = hidden_act
        self.padding = layers.ZeroPadding2D(((0, 1), (0, 1)), name="padding", dtype=self.dtype_policy)
        self.convolution = layers.Conv2D(
            out_dim, 3, strides=2, padding="valid", use_bias=False,
            kernel_initializer=_conv_initializer(), name="convolution", dtype=self.dtype_policy,
        )
        self.batchnorm = layers.BatchNormalization(
            epsilon=batch_norm_eps, momentum=batch_norm_momentum, name="batchnorm",
            dtype=self.dtype_policy,
        )

    def build(self, input_shape):
        self.convolution.build(input_shape)
        self.batchnorm.build((None, None, None, self.out_dim))
        self.built = True

    def call(self, pixel_values, training=False, fold_batch_norm=True):
        return conv_bn(pixel_values, self.convolution, self.batchnorm, training, fold_batch_norm,
                       self.hidden_act, pad=self.padding)

    def get_config(self):
        config = super().get_config()
        config.update(out_dim=self.out_dim, batch_norm_eps=self.batch_norm_eps,
                      batch_norm_momentum=self.batch_norm_momentum, hidden_act=self.hidden_act)
        return config


class AlignVisionSqueezeExcite(layers.Layer):
    """Channel gating: global mean, 1x1 reduce (+act), 1x1 expand, sigmoid, multiply."""

    def __init__(self, dim, dim_se, hidden_act="swish", **kwargs):
        super().__init__(**kwargs)
        self.dim = dim
        self.dim_se = dim_se
        self.hidden_act = hidden_act
        self.reduce = layers.Conv2D(dim_se, 1, name="reduce", kernel_initializer=_conv_initializer(),
                                    dtype=self.dtype_policy)
        self.expand = layers.Conv2D(dim, 1, name="expand", kernel_initializer=_conv_initializer(),
                                    dtype=self.dtype_policy)
        self.activation = _activation(hidden_act)

    def build(self, input_shape):
        self.reduce.build((None, 1, 1, self.dim))
        self.expand.build((None, 1, 1, self.dim_se))
        self.built = True

    def call(self, x):
        s = ops.mean(x, axis=(1, 2), keepdims=True)
        s = ops.sigmoid(self.expand(self.activation(self.reduce(s))))
        return x * s

    def get_config(self):
        config = super().get_config()
        config.update(dim=self.dim, dim_se=self.dim_se, hidden_act=self.hidden_act)
        return config


class AlignVisionBlock(layers.Layer):
    """MBConv: [expand 1x1] -> depthwise kxk -> squeeze-excite -> project 1x1 [-> drop-connect + residual]."""

    def __init__(self, in_dim, out_dim, stride, kernel_size, expand_ratio, drop_rate,
                 id_skip, adjust_padding=True, squeeze_expansion_ratio=0.25,
                 batch_norm_eps=1e-3, batch_norm_momentum=0.99, hidden_act="swish", **kwargs):
        super().__init__(**kwargs)
        self.in_dim = in_dim
        self.out_dim = out_dim
        self.stride = stride
        self.kernel_size = kernel_size
        self.expand_ratio = expand_ratio
        self.drop_rate = drop_rate
        self.id_skip = id_skip
        self.adjust_padding = adjust_padding
        self.squeeze_expansion_ratio = squeeze_expansion_ratio
        self.batch_norm_eps = batch_norm_eps
        self.batch_norm_momentum = batch_norm_momentum
        self.hidden_act = hidden_act

        self.expand = expand_ratio != 1
        self.hidden_dim = in_dim * expand_ratio if self.expand else in_dim
        # The residual exists on every block that is not the first of its stage.
        self.apply_residual = stride == 1 and not id_skip
        bn = dict(epsilon=batch_norm_eps, momentum=batch_norm_momentum, dtype=self.dtype_policy)
        if self.expand:
            self.expand_conv = layers.Conv2D(
                self.hidden_dim, 1, use_bias=False, kernel_initializer=_conv_initializer(),
                name="expand_conv", dtype=self.dtype_policy,
            )
            self.expand_bn = layers.BatchNormalization(name="expand_bn", **bn)
        if stride == 2:
            self.depthwise_conv_pad = layers.ZeroPadding2D(
                stride2_padding(kernel_size, adjust_padding), name="depthwise_conv_pad",
                dtype=self.dtype_policy,
            )
        self.depthwise_conv = layers.DepthwiseConv2D(
            kernel_size, strides=stride, padding="valid" if stride == 2 else "same",
            use_bias=False, depthwise_initializer=_conv_initializer(),
            name="depthwise_conv", dtype=self.dtype_policy,
        )
        self.depthwise_norm = layers.BatchNormalization(name="depthwise_norm", **bn)
        # Squeeze-excite width comes from the block's input width, before expansion.
        self.squeeze_excite = AlignVisionSqueezeExcite(
            self.hidden_dim, max(1, int(in_dim * squeeze_expansion_ratio)), hidden_act,
            name="squeeze_excite", dtype=self.dtype_policy,
        )
        self.project_conv = layers.Conv2D(
            out_dim, 1, use_bias=False, kernel_initializer=_conv_initializer(),
            name="project_conv", dtype=self.dtype_policy,
        )
        self.project_bn = layers.BatchNormalization(name="project_bn", **bn)
        # Drop-connect: drop the whole residual branch per sample (noise shape [N, 1, 1, 1]).
        self.drop_connect = layers.Dropout(drop_rate, noise_shape=(None, 1, 1, 1),
                                           name="drop_connect", dtype=self.dtype_policy)

    def build(self, input_shape):
        if self.expand:
            self.expand_conv.build((None, None, None, self.in_dim))
            self.expand_bn.build((None, None, None, self.hidden_dim))
        self.depthwise_conv.build((None, None, None, self.hidden_dim))
        self.depthwise_norm.build((None, None, None, self.hidden_dim))
        self.squeeze_excite.build((None, None, None, self.hidden_dim))
        self.project_conv.build((None, None, None, self.hidden_dim))
        self.project_bn.build((None, None, None, self.out_dim))
        self.built = True

    def call(self, inputs, training=False, fold_batch_norm=True):
        x = inputs
        fold = fold_batch_norm
        if self.expand:
            x = conv_bn(x, self.expand_conv, self.expand_bn, training, fold, self.hidden_act)
        x = conv_bn(x, self.depthwise_conv, self.depthwise_norm, training, fold, self.hidden_act,
                    pad=self.depthwise_conv_pad if self.stride == 2 else None)
        x = self.squeeze_excite(x)
        x = conv_bn(x, self.project_conv, self.project_bn, training, fold)
        if self.apply_residual:
            if self.drop_rate > 0:
                x = self.drop_connect(x, training=training)
            x = x + inputs
        return x

    def get_config(self):
        config = super().get_config()
        config.update(
            in_dim=self.in_dim, out_dim=self.out_dim, stride=self.stride,
            kernel_size=self.kernel_size, expand_ratio=self.expand_ratio,
            drop_rate=self.drop_rate, id_skip=self.id_skip, adjust_padding=self.adjust_padding,
            squeeze_expansion_ratio=self.squeeze_expansion_ratio,
            batch_norm_eps=self.batch_norm_eps, batch_norm_momentum=self.batch_norm_momentum,
            hidden_act=self.hidden_act,
        )
        return config


def block_arguments(config: AlignVisionConfig) -> list[dict]:
    """Per-block constructor arguments, in order, as the reference encoder derives them."""
    blocks = []
    num_blocks = config.num_blocks
    for stage in range(len(config.in_channels)):
        stage_in = config.round_filters(config.in_channels[stage])
        out_dim = config.round_filters(config.out_channels[stage])
        for j in range(config.round_repeats(config.num_block_repeats[stage])):
            index = len(blocks)
            blocks.append(dict(
                in_dim=stage_in if j == 0 else out_dim,
                out_dim=out_dim,
                stride=config.strides[stage] if j == 0 else 1,
                kernel_size=config.kernel_sizes[stage],
                expand_ratio=config.expand_ratios[stage],
                drop_rate=config.drop_connect_rate * index / num_blocks,
                id_skip=j == 0,
                adjust_padding=index not in config.depthwise_padding,
            ))
    return blocks


@keras.saving.register_keras_serializable(package="align_tf")
class AlignVisionModel(PretrainedMixin, keras.Model):
    """EfficientNet trunk, called like transformers' AlignVisionModel: `model(pixel_values)`,
    `model(pixel_values=...)` or `model({"pixel_values": ...})`."""

    config_class = AlignVisionConfig
    checkpoint_prefix = "vision_model."

    def __init__(self, config: AlignVisionConfig | dict | None = None, **kwargs):
        super().__init__(**kwargs)
        self.config = config = AlignVisionConfig.coerce(config)
        common = dict(batch_norm_eps=config.batch_norm_eps,
                      batch_norm_momentum=config.batch_norm_momentum,
                      hidden_act=config.hidden_act, dtype=self.dtype_policy)
        self.embeddings = AlignVisionEmbeddings(config.round_filters(32), name="embeddings", **common)
        self.blocks = [
            AlignVisionBlock(squeeze_expansion_ratio=config.squeeze_expansion_ratio,
                             name=f"block_{i}", **args, **common)
            for i, args in enumerate(block_arguments(config))
        ]

    def build(self, input_shape=None):
        self.embeddings.build((None, None, None, self.config.num_channels))
        for block in self.blocks:
            block.build((None, None, None, block.in_dim))
        self.built = True

    def call(self, pixel_values=None, training=False, output_hidden_states=None, fold_batch_norm=True,
             *, return_dict=None, data_format=None):
        """`pixel_values` NHWC (or NCHW, see `channels_last`), or a dict holding them. Returns a
        VisionModelOutput (NHWC maps), or its tuple with `return_dict=False`.

        `fold_batch_norm` (inference only) folds BatchNorm into the convolutions in-graph:
        same numbers within float rounding, fewer passes over the activations."""
        inputs = gather_inputs(type(self).__name__, pixel_values, "pixel_values", VISION_INPUTS, {})
        if "pixel_values" not in inputs:
            raise ConfigError("AlignVisionModel needs pixel_values")
        return finish(self.encode(inputs["pixel_values"], training=training,
                                  output_hidden_states=output_hidden_states,
                                  fold_batch_norm=fold_batch_norm, data_format=data_format),
                      return_dict)

    def encode(self, pixel_values, training=False, output_hidden_states=False, fold_batch_norm=True,
               data_format=None) -> VisionModelOutput:
        x = channels_last(pixel_values, data_format, self.config.num_channels)
        x = self.embeddings(x, training=training, fold_batch_norm=fold_batch_norm)
        hidden_states = [x]
        for block in self.blocks:
            x = block(x, training=training, fold_batch_norm=fold_batch_norm)
            hidden_states.append(x)
        if self.config.pooling_type == "mean":
            pooled = ops.mean(x, axis=(1, 2))
        else:
            pooled = ops.max(x, axis=(1, 2))
        outputs = VisionModelOutput(last_hidden_state=x, pooler_output=pooled)
        if output_hidden_states:
            outputs["hidden_states"] = tuple(hidden_states)
        return outputs

    def get_config(self):
        return {"config": self.config.to_dict(), "name": self.name}

    @classmethod
    def from_config(cls, config):
        return cls(**config)
