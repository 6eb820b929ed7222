"""ResNet-50 v1.5 in tf_keras, as the MLCommons reference builds it (retired_benchmarks/resnet-tf2).

v1.5 = the stride-2 downsampling sits on the 3x3 conv of the first bottleneck of a stage (v1 puts it on the
first 1x1). Layer names, He-normal conv init, N(0, 0.01) classifier init, BN momentum 0.9 / epsilon 1e-5 and
bias-free convs follow the reference, so checkpoints and the LARS skip list (names containing 'bn' or
'bias') line up. No L2 regularisers: with LARS the weight decay lives in the optimizer.

The model returns float32 logits; the reference ends in a float32 softmax and Keras recovers the logits
from it for the loss, so computing the cross-entropy from logits is the same math, with fewer steps.
`width` and `blocks` shrink the network for CPU smoke runs; the defaults are the closed-division model.
"""
from __future__ import annotations

from typing import Sequence

import tf_keras
from tf_keras import layers

BATCH_NORM_DECAY = 0.9
BATCH_NORM_EPSILON = 1e-5
RESNET50_BLOCKS = (3, 4, 6, 3)
STAGE_BASE_FILTERS = (64, 128, 256, 512)


def _conv(filters: int, kernel: int, name: str, strides: int = 1, padding: str = "same"):
    return layers.Conv2D(filters, kernel, strides=strides, padding=padding, use_bias=False,
                         kernel_initializer="he_normal", name=name)


def _bn(name: str, zero_gamma: bool = False):
    return layers.BatchNormalization(axis=-1, momentum=BATCH_NORM_DECAY, epsilon=BATCH_NORM_EPSILON,
                                     gamma_initializer="zeros" if zero_gamma else "ones", name=name)


def bottleneck(x, filters: int, stage: int, block: str, strides: int = 1, projection: bool = False,
               zero_init_last_gamma: bool = False):
    """1x1 (filters) -> 3x3 (filters, stride here: v1.5) -> 1x1 (4 x filters), plus the shortcut."""
    conv_name, bn_name = f"res{stage}{block}_branch", f"bn{stage}{block}_branch"
    shortcut = x
    y = layers.Activation("relu")(_bn(bn_name + "2a")(_conv(filters, 1, conv_name + "2a")(x)))
    y = layers.Activation("relu")(_bn(bn_name + "2b")(_conv(filters, 3, conv_name + "2b", strides)(y)))
    # Zero gamma on the last BN makes every residual block start as the identity (Goyal et al. 2017).
    y = _bn(bn_name + "2c", zero_init_last_gamma)(_conv(4 * filters, 1, conv_name + "2c")(y))
    if projection:
        shortcut = _bn(bn_name + "1")(_conv(4 * filters, 1, conv_name + "1", strides)(x))
    return layers.Activation("relu")(layers.add([y, shortcut]))


def resnet50(num_classes: int = 1000, image_size: int = 224, width: float = 1.0,
             blocks: Sequence[int] = RESNET50_BLOCKS, zero_init_last_gamma: bool = False) -> tf_keras.Model:
    """ResNet-50 v1.5 on NHWC float images (mean-subtracted, 0..255 scale) -> float32 logits."""
    images = layers.Input(shape=(image_size, image_size, 3), name="images")
    x = layers.ZeroPadding2D(padding=3, name="conv1_pad")(images)
    x = _conv(max(1, round(64 * width)), 7, "conv1", strides=2, padding="valid")(x)
    x = layers.Activation("relu")(_bn("bn_conv1")(x))
    x = layers.MaxPooling2D(3, strides=2, padding="same")(x)
    for stage_index, (num_blocks, base) in enumerate(zip(blocks, STAGE_BASE_FILTERS)):
        stage, filters = stage_index + 2, max(1, round(base * width))
        for block_index in range(num_blocks):
            first = block_index == 0
            x = bottleneck(x, filters, stage, "abcdefghijklmnopqrstuvwxyz"[block_index],
                           strides=2 if first and stage > 2 else 1, projection=first,
                           zero_init_last_gamma=zero_init_last_gamma)
    x = layers.GlobalAveragePooling2D(name="reduce_mean")(x)
    x = layers.Dense(num_classes, kernel_initializer=tf_keras.initializers.RandomNormal(stddev=0.01),
                     name="fc1000")(x)
    # Logits in float32 whatever the compute policy: the softmax cross-entropy is not safe in fp16.
    logits = layers.Activation("linear", dtype="float32", name="logits")(x)
    return tf_keras.Model(images, logits, name="resnet50")
