"""Parameter and FLOP counts for any Keras model, by walking its layers (backend-independent).

FLOPs count a multiply-add as 2, for convolutions and dense layers, which carry nearly all the
arithmetic of a CNN; element-wise work (activations, batch norm, adds) is left out, as fvcore and
timm's tables do.
"""

import math

import keras


def count_params(model):
    return int(sum(math.prod(w.shape) for w in model.weights))


def count_flops(model):
    total = 0
    for layer in _leaf_layers(model):
        total += _layer_flops(layer)
    return int(total)


def _leaf_layers(model):
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _leaf_layers(layer)
        else:
            yield layer


def _layer_flops(layer):
    try:
        out_shape = layer.output.shape
        in_shape = layer.input.shape
    except (AttributeError, ValueError):
        return 0
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        kh, kw = layer.kernel_size
        return 2 * math.prod(out_shape[1:]) * kh * kw
    if isinstance(layer, keras.layers.Conv2D):
        kh, kw = layer.kernel_size
        cin = in_shape[-1] // layer.groups
        return 2 * math.prod(out_shape[1:]) * kh * kw * cin
    if isinstance(layer, keras.layers.Dense):
        return 2 * math.prod(out_shape[1:]) * in_shape[-1]
    return 0
