"""Backbones from `keras.applications` (weights=None, or a local weights file: nothing downloads)."""

import os

import keras

from toolkit.backbones.registry import normalize, pyramid_from_model, register
from toolkit.errors import ToolkitError


def _application(constructor, name, input_shape, weights, **kwargs):
    if weights not in (None, "") and not os.path.isfile(weights):
        raise ToolkitError(
            f"{name}: weights must be None or a local weights file; {weights!r} is not a file "
            "(pretrained weights cannot be downloaded here)"
        )
    inputs = keras.Input(input_shape, name="image")
    base = constructor(
        input_tensor=normalize(inputs),
        include_top=False,
        weights=weights or None,
        include_preprocessing=False,
        **kwargs,
    )
    return keras.Model(inputs, pyramid_from_model(base, input_shape), name=name)


@register(
    "mobilenetv3_small",
    kind="vision",
    provider="keras.applications",
    description="keras.applications MobileNetV3Small (Howard et al. 2019)",
)
def mobilenetv3_small(input_shape, alpha=1.0, minimalistic=False, weights=None):
    return _application(
        keras.applications.MobileNetV3Small,
        "mobilenetv3_small",
        input_shape,
        weights,
        alpha=alpha,
        minimalistic=minimalistic,
    )
