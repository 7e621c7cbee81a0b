"""Modified ENet of seed 001 (Paszke et al. 2016, adapted to one-channel CMR-LGE).

* Initial block: 13 3x3 stride-2 convolutions in parallel with 2x2 max
  pooling, concatenated to 14 maps (instead of ENet's 16 for RGB).
* Encoder: stage 1 has 5 bottlenecks (the first downsampling), stage 2 has 9
  (the first downsampling), stage 3 has 8; regular, dilated (2, 4, 8, 16) and
  asymmetric (5x1 + 1x5) convolutions as in ENet.
* Decoder: stages of 3 and 2 bottlenecks, each opened by max unpooling with
  the indices of the matching max pooling.
* Each bottleneck: 1x1 (or 2x2 stride 2) projection, main convolution, 1x1
  expansion, each with batch norm and PReLU; main branch max pooling plus
  zero-padding of channels when downsampling.
* Final "full convolution": a 2x2 stride-2 transposed convolution to the 2
  classes. The paper describes a kernel as large as the image, which would
  only be correct for a fixed input size; we keep ENet's original choice.

Max pooling with argmax and unpooling with ``tf.scatter_nd`` export to ONNX
(MaxPool with Indices, ScatterND) and match TensorFlow exactly.
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import layers


class MaxPoolWithArgmax(layers.Layer):
    """2x2 max pooling that also returns flat indices (batch included) for unpooling."""

    def call(self, x):
        pooled, argmax = tf.nn.max_pool_with_argmax(x, ksize=2, strides=2, padding="VALID",
                                                    include_batch_in_index=True)
        return pooled, tf.cast(argmax, tf.int64)

    def compute_output_shape(self, input_shape):
        b, h, w, c = input_shape
        shape = (b, None if h is None else h // 2, None if w is None else w // 2, c)
        return shape, shape


class ChannelPad(layers.Layer):
    """Zero maps appended to the main branch so it matches the wider extension branch."""

    def __init__(self, extra: int, **kwargs):
        super().__init__(**kwargs)
        self.extra = extra

    def call(self, x):
        return tf.pad(x, [[0, 0], [0, 0], [0, 0], [0, self.extra]]) if self.extra else x

    def compute_output_shape(self, input_shape):
        return (*input_shape[:3], input_shape[3] + self.extra)

    def get_config(self):
        return {**super().get_config(), "extra": self.extra}


class MaxUnpool(layers.Layer):
    """Place each value back at its argmax position; everything else is zero."""

    def call(self, x, argmax, like):
        out_shape = tf.shape(like, out_type=tf.int64)
        flat_size = tf.reduce_prod(out_shape)
        flat = tf.scatter_nd(tf.reshape(argmax, [-1, 1]), tf.reshape(x, [-1]),
                             tf.reshape(flat_size, [1]))
        return tf.reshape(flat, out_shape)

    def compute_output_shape(self, x_shape, argmax_shape, like_shape):
        return like_shape


def _conv_bn_prelu(x, filters, kernel, name, strides=1, dilation=1, weight_decay=2e-4):
    x = layers.Conv2D(filters, kernel, strides=strides, dilation_rate=dilation, padding="same",
                      use_bias=False, kernel_regularizer=keras.regularizers.l2(weight_decay),
                      name=f"{name}_conv")(x)
    x = layers.BatchNormalization(name=f"{name}_bn")(x)
    return layers.PReLU(shared_axes=[1, 2], name=f"{name}_prelu")(x)


def _expand_and_merge(main, ext, filters: int, name: str, dropout: float, weight_decay: float):
    """Close a bottleneck: 1x1 expansion, batch norm, spatial dropout, sum, PReLU."""
    ext = layers.Conv2D(filters, 1, use_bias=False,
                        kernel_regularizer=keras.regularizers.l2(weight_decay),
                        name=f"{name}_expand")(ext)
    ext = layers.BatchNormalization(name=f"{name}_expand_bn")(ext)
    ext = layers.SpatialDropout2D(dropout, name=f"{name}_dropout")(ext)
    y = layers.Add(name=f"{name}_add")([main, ext])
    return layers.PReLU(shared_axes=[1, 2], name=f"{name}_out")(y)


def initial_block(x, weight_decay: float = 2e-4):
    conv = layers.Conv2D(13, 3, strides=2, padding="same",
                         kernel_regularizer=keras.regularizers.l2(weight_decay),
                         name="initial_conv")(x)
    pool = layers.MaxPooling2D(2, name="initial_pool")(x)
    x = layers.Concatenate(name="initial_concat")([conv, pool])
    x = layers.BatchNormalization(name="initial_bn")(x)
    return layers.PReLU(shared_axes=[1, 2], name="initial_prelu")(x)


def bottleneck(x, filters: int, name: str, kind: str = "regular", dilation: int = 1,
               dropout: float = 0.1, weight_decay: float = 2e-4):
    """``kind``: regular, dilated, asymmetric or downsampling. Returns (y, argmax or None)."""
    in_ch = x.shape[-1]
    inner = max(filters // 4, 4)
    argmax = None
    if kind == "downsampling":
        main, argmax = MaxPoolWithArgmax(name=f"{name}_pool")(x)
        main = ChannelPad(filters - in_ch, name=f"{name}_pad")(main)
        ext = _conv_bn_prelu(x, inner, 2, f"{name}_proj", strides=2, weight_decay=weight_decay)
    else:
        main = x
        ext = _conv_bn_prelu(x, inner, 1, f"{name}_proj", weight_decay=weight_decay)
    if kind == "asymmetric":
        ext = layers.Conv2D(inner, (5, 1), padding="same", use_bias=False,
                            kernel_regularizer=keras.regularizers.l2(weight_decay),
                            name=f"{name}_asym1")(ext)
        ext = _conv_bn_prelu(ext, inner, (1, 5), f"{name}_asym2", weight_decay=weight_decay)
    else:
        ext = _conv_bn_prelu(ext, inner, 3, f"{name}_main",
                             dilation=dilation if kind == "dilated" else 1,
                             weight_decay=weight_decay)
    return _expand_and_merge(main, ext, filters, name, dropout, weight_decay), argmax


def upsampling_bottleneck(x, filters: int, argmax, pooled_from, name: str,
                          dropout: float = 0.1, weight_decay: float = 2e-4):
    """Main branch: 1x1 conv to the pooled map count, max unpooling, zero maps up to ``filters``.

    ``pooled_from`` is the tensor the matching downsampling pooled (its shape
    is where the indices point). With the 14-map initial block the last
    unpooling restores 14 maps, padded to 16 as the downsampling padded them.
    """
    inner = max(filters // 4, 4)
    pooled_ch = pooled_from.shape[-1]
    main = layers.Conv2D(pooled_ch, 1, use_bias=False,
                         kernel_regularizer=keras.regularizers.l2(weight_decay),
                         name=f"{name}_main_conv")(x)
    main = layers.BatchNormalization(name=f"{name}_main_bn")(main)
    main = MaxUnpool(name=f"{name}_unpool")(main, argmax, pooled_from)
    main = ChannelPad(filters - pooled_ch, name=f"{name}_pad")(main)
    ext = _conv_bn_prelu(x, inner, 1, f"{name}_proj", weight_decay=weight_decay)
    ext = layers.Conv2DTranspose(inner, 3, strides=2, padding="same", use_bias=False,
                                 kernel_regularizer=keras.regularizers.l2(weight_decay),
                                 name=f"{name}_deconv")(ext)
    ext = layers.BatchNormalization(name=f"{name}_deconv_bn")(ext)
    ext = layers.PReLU(shared_axes=[1, 2], name=f"{name}_deconv_prelu")(ext)
    return _expand_and_merge(main, ext, filters, name, dropout, weight_decay)


# Stage 2/3 pattern after the first bottleneck (ENet table 1).
_MIDDLE = (("regular", 1), ("dilated", 2), ("asymmetric", 1), ("dilated", 4),
           ("regular", 1), ("dilated", 8), ("asymmetric", 1), ("dilated", 16))

# Bottlenecks per stage (seed 001, Fig. 1); stages 2 and 3 follow _MIDDLE.
STAGE_COUNTS = (5, 1 + len(_MIDDLE), len(_MIDDLE), 3, 2)


def build_enet(input_size: int = 64, n_classes: int = 2, weight_decay: float = 2e-4,
               name: str = "enet") -> keras.Model:
    inputs = keras.Input(shape=(input_size, input_size, 1), name="image")
    x0 = initial_block(inputs, weight_decay)
    # Stage 1: 5 bottlenecks, the first downsampling to 64 maps.
    x, idx1 = bottleneck(x0, 64, "b1_0", "downsampling", dropout=0.01, weight_decay=weight_decay)
    for i in range(1, STAGE_COUNTS[0]):
        x, _ = bottleneck(x, 64, f"b1_{i}", dropout=0.01, weight_decay=weight_decay)
    x1 = x
    # Stage 2: 9 bottlenecks, the first downsampling to 128 maps.
    x, idx2 = bottleneck(x1, 128, "b2_0", "downsampling", weight_decay=weight_decay)
    for i, (kind, dil) in enumerate(_MIDDLE, start=1):
        x, _ = bottleneck(x, 128, f"b2_{i}", kind, dil, weight_decay=weight_decay)
    # Stage 3: 8 bottlenecks, same pattern, no downsampling.
    for i, (kind, dil) in enumerate(_MIDDLE):
        x, _ = bottleneck(x, 128, f"b3_{i}", kind, dil, weight_decay=weight_decay)
    # Stage 4: 3 bottlenecks, the first upsampling to 64 maps.
    x = upsampling_bottleneck(x, 64, idx2, x1, "b4_0", weight_decay=weight_decay)
    for i in range(1, STAGE_COUNTS[3]):
        x, _ = bottleneck(x, 64, f"b4_{i}", weight_decay=weight_decay)
    # Stage 5: 2 bottlenecks, the first upsampling to 16 maps.
    x = upsampling_bottleneck(x, 16, idx1, x0, "b5_0", weight_decay=weight_decay)
    for i in range(1, STAGE_COUNTS[4]):
        x, _ = bottleneck(x, 16, f"b5_{i}", weight_decay=weight_decay)
    logits = layers.Conv2DTranspose(n_classes, 2, strides=2, padding="same", name="fullconv")(x)
    probs = layers.Softmax(name="probabilities", dtype="float32")(logits)
    return keras.Model(inputs, probs, name=name)
