"""U-Net for the cascade (seed 000): CNN1 myocardium on the whole image, CNN2 scar on the crop.

Sized for the latency budget rather than the original 2015 width: four
levels, 16 filters at the top, batch norm after every convolution (fused
into the convolution by onnxruntime at load time).
"""

from __future__ import annotations

import keras
from keras import layers


def _block(x, filters: int, name: str, weight_decay: float):
    for i in range(2):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False,
                          kernel_regularizer=keras.regularizers.l2(weight_decay),
                          name=f"{name}_conv{i}")(x)
        x = layers.BatchNormalization(name=f"{name}_bn{i}")(x)
        x = layers.ReLU(name=f"{name}_relu{i}")(x)
    return x


def build_unet(input_shape: tuple[int, int, int] = (128, 128, 1), n_classes: int = 2,
               base_filters: int = 16, depth: int = 4, weight_decay: float = 2e-4,
               name: str = "unet") -> keras.Model:
    """Encoder-decoder with skip connections; softmax over ``n_classes`` per pixel.

    Input height and width must be divisible by ``2 ** (depth - 1)``.
    """
    inputs = keras.Input(shape=input_shape, name="image")
    x = inputs
    skips = []
    for level in range(depth - 1):
        x = _block(x, base_filters * 2**level, f"enc{level}", weight_decay)
        skips.append(x)
        x = layers.MaxPooling2D(2, name=f"pool{level}")(x)
    x = _block(x, base_filters * 2 ** (depth - 1), "bottom", weight_decay)
    for level in reversed(range(depth - 1)):
        x = layers.Conv2DTranspose(base_filters * 2**level, 2, strides=2, padding="same",
                                   name=f"up{level}")(x)
        x = layers.Concatenate(name=f"skip{level}")([x, skips[level]])
        x = _block(x, base_filters * 2**level, f"dec{level}", weight_decay)
    logits = layers.Conv2D(n_classes, 1, name="logits")(x)
    probs = layers.Softmax(name="probabilities", dtype="float32")(logits)
    return keras.Model(inputs, probs, name=name)
