"""KerasHub backbones built from config (no preset download), or from a local preset directory."""

import os

import keras

from toolkit.backbones.registry import normalize, pyramid_from_model, register
from toolkit.errors import ToolkitError


def _hub_pyramid(backbone, input_shape, name):
    """KerasHub names P2..P5 in `pyramid_outputs`; P1 (stride 2) is found by resolution."""
    features = keras.Model(
        backbone.inputs,
        pyramid_from_model(backbone, input_shape, known=backbone.pyramid_outputs),
        name=f"{name}_features",
    )
    inputs = keras.Input(input_shape, name="image")
    return keras.Model(inputs, features(normalize(inputs)), name=name)


@register(
    "hub_resnet",
    kind="vision",
    provider="keras_hub",
    description="KerasHub ResNetBackbone from config (ResNet-18 layout by default)",
)
def hub_resnet(input_shape, blocks=(2, 2, 2, 2), widths=(64, 128, 256, 512), preset=None):
    """`preset` is a local KerasHub preset directory; without it the backbone is built from config."""
    import keras_hub

    if preset is not None:
        if not os.path.isdir(preset):
            raise ToolkitError(f"hub_resnet: preset {preset!r} is not a local directory")
        backbone = keras_hub.models.ResNetBackbone.from_preset(preset, image_shape=input_shape)
    else:
        backbone = keras_hub.models.ResNetBackbone(
            input_conv_filters=[64],
            input_conv_kernel_sizes=[7],
            stackwise_num_filters=list(widths),
            stackwise_num_blocks=list(blocks),
            stackwise_num_strides=[1, 2, 2, 2],
            block_type="basic_block",
            image_shape=input_shape,
        )
    return _hub_pyramid(backbone, input_shape, "hub_resnet")
