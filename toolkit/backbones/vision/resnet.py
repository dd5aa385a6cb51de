"""A ResNet-style backbone of our own: basic residual blocks, one stage per pyramid level.

Unlike ImageNet ResNets it has no stride-4 stem (3x3 stride-2 conv, no max-pool), so small
images (28..64 px) keep their detail; `widths` and `depths` give ResNet-18-like (2,2,2,2) or
slimmer variants.
"""

import keras
from keras import layers

from toolkit.backbones.registry import normalize, register
from toolkit.backbones.vision.edgenet import conv_bn


def basic_block(x, filters, stride, name):
    shortcut = x
    x = conv_bn(x, filters, 3, stride, "relu", f"{name}_a")
    x = conv_bn(x, filters, 3, 1, None, f"{name}_b")
    if stride != 1 or shortcut.shape[-1] != filters:
        shortcut = conv_bn(shortcut, filters, 1, stride, None, f"{name}_shortcut")
    x = layers.Add(name=f"{name}_add")([shortcut, x])
    return layers.Activation("relu", name=f"{name}_out")(x)


@register(
    "resnet",
    kind="vision",
    provider="toolkit",
    description="ResNet-style basic blocks with a light stride-2 stem",
    min_size=16,
)
def resnet(input_shape, widths=(16, 32, 64, 128), depths=(1, 1, 2, 1), stem_width=16):
    if len(widths) != 4 or len(depths) != 4:
        raise ValueError("resnet needs 4 widths and 4 depths (levels P2..P5)")
    inputs = keras.Input(input_shape, name="image")
    x = normalize(inputs)
    x = conv_bn(x, stem_width, 3, 2, "relu", "stem")
    pyramid = {"P1": x}
    for i, (filters, depth) in enumerate(zip(widths, depths)):
        for j in range(depth):
            x = basic_block(x, filters, 2 if j == 0 else 1, f"stage{i + 2}_block{j}")
        pyramid[f"P{i + 2}"] = x
    return keras.Model(inputs, pyramid, name="resnet")
