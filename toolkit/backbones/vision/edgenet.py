"""EdgeNet: our compact edge backbone in the MobileNetV3 style, and EdgeNet-Lite for int8.

Inverted residual blocks (1x1 expand, depthwise kxk, 1x1 project), squeeze-and-excite on the
wider blocks, hard-swish in the deeper stages, and a width multiplier. Every op here maps to a
LiteRT builtin (CONV_2D, DEPTHWISE_CONV_2D, HARD_SWISH, MEAN, MUL, ADD) and quantizes to int8.

`edgenet_lite` makes EfficientNet-Lite's changes to it (Tan & Le 2019; the TF Model Garden's
efficientnet-lite): ReLU6 in every block and the stem, and no squeeze-and-excite. In int8, hard-swish
and the squeeze-excite gate (a global mean, two 1x1 convs, hard-sigmoid, a broadcast multiply) leave
XNNPACK's fast quantized path, and `edgenet` runs 1.1-3.4x slower in int8 than in fp32
(benchmarks/int8_latency.py); ReLU6 fuses into the convolutions as their clamp.
"""

import keras
from keras import layers

from toolkit.backbones.registry import normalize, register

# (kernel, expanded channels, output channels, squeeze-excite, activation, stride) per block,
# grouped by the pyramid level that the group ends on. MobileNetV3-Small's table, Howard et al. 2019.
EDGENET_STAGES = {
    "P2": [(3, 16, 16, True, "relu", 2)],
    "P3": [(3, 72, 24, False, "relu", 2), (3, 88, 24, False, "relu", 1)],
    "P4": [
        (5, 96, 40, True, "hard_swish", 2),
        (5, 240, 40, True, "hard_swish", 1),
        (5, 240, 40, True, "hard_swish", 1),
        (5, 120, 48, True, "hard_swish", 1),
        (5, 144, 48, True, "hard_swish", 1),
    ],
    "P5": [
        (5, 288, 96, True, "hard_swish", 2),
        (5, 576, 96, True, "hard_swish", 1),
        (5, 576, 96, True, "hard_swish", 1),
    ],
}


def make_divisible(value, divisor=8):
    """Rounds channels to a multiple of 8 (fast on every accelerator), never below 90% of value."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def conv_bn(x, filters, kernel, stride, activation, name, groups=1):
    x = layers.Conv2D(
        filters, kernel, strides=stride, padding="same", use_bias=False, groups=groups, name=f"{name}_conv"
    )(x)
    x = layers.BatchNormalization(momentum=0.9, epsilon=1e-3, name=f"{name}_bn")(x)
    if activation:
        x = layers.Activation(activation, name=f"{name}_act")(x)
    return x


def squeeze_excite(x, name, ratio=0.25):
    channels = x.shape[-1]
    s = layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_squeeze")(x)
    s = layers.Conv2D(make_divisible(channels * ratio), 1, activation="relu", name=f"{name}_reduce")(s)
    s = layers.Conv2D(channels, 1, activation="hard_sigmoid", name=f"{name}_expand")(s)
    return layers.Multiply(name=f"{name}_excite")([x, s])


def inverted_residual(x, kernel, expanded, filters, se, activation, stride, name):
    shortcut = x
    if expanded != x.shape[-1]:
        x = conv_bn(x, expanded, 1, 1, activation, f"{name}_expand")
    x = layers.DepthwiseConv2D(kernel, strides=stride, padding="same", use_bias=False, name=f"{name}_dw")(x)
    x = layers.BatchNormalization(momentum=0.9, epsilon=1e-3, name=f"{name}_dw_bn")(x)
    x = layers.Activation(activation, name=f"{name}_dw_act")(x)
    if se:
        x = squeeze_excite(x, f"{name}_se")
    x = conv_bn(x, filters, 1, 1, None, f"{name}_project")
    if stride == 1 and shortcut.shape[-1] == filters:
        x = layers.Add(name=f"{name}_add")([shortcut, x])
    return x


@register(
    "edgenet",
    kind="vision",
    provider="toolkit",
    description="MobileNetV3-style edge backbone: inverted residuals, depthwise convs, SE, hard-swish",
    min_size=16,
)
def edgenet(input_shape, width=1.0, dropout=0.0):
    """`width` scales every layer's channels; `dropout` is spatial dropout before each stage."""
    return _build(input_shape, width, dropout, activation=None, squeeze_excite=True, name="edgenet")


def _build(input_shape, width, dropout, activation, squeeze_excite, name):
    """`activation` (e.g. "relu6"), when given, replaces the table's ReLU / hard-swish everywhere;
    `squeeze_excite=False` drops every squeeze-and-excite gate."""
    inputs = keras.Input(input_shape, name="image")
    x = normalize(inputs)
    x = conv_bn(x, make_divisible(16 * width), 3, 2, activation or "hard_swish", "stem")
    pyramid = {"P1": x}
    block = 0
    for level, blocks in EDGENET_STAGES.items():
        if dropout:
            x = layers.SpatialDropout2D(dropout, name=f"{level}_dropout")(x)
        for kernel, expanded, filters, se, block_activation, stride in blocks:
            x = inverted_residual(
                x,
                kernel,
                make_divisible(expanded * width),
                make_divisible(filters * width),
                se and squeeze_excite,
                activation or block_activation,
                stride,
                name=f"block{block}",
            )
            block += 1
        pyramid[level] = x
    return keras.Model(inputs, pyramid, name=name)


@register(
    "edgenet_lite",
    kind="vision",
    provider="toolkit",
    description="EdgeNet for int8 (EfficientNet-Lite's changes): ReLU6 everywhere, no squeeze-excite",
    min_size=16,
)
def edgenet_lite(input_shape, width=1.0, dropout=0.0):
    """EdgeNet's blocks and widths with ReLU6 and no squeeze-excite: what runs fast in int8."""
    return _build(input_shape, width, dropout, activation="relu6", squeeze_excite=False, name="edgenet_lite")
