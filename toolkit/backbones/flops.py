"""Parameter and FLOP counts for any Keras model, by walking its layers (backend-independent).

FLOPs count a multiply-add as 2, for convolutions, dense layers, recurrent cells (their input
and recurrent matrix products at every step) and Transformer blocks (projections, attention
products, feed-forward), which carry nearly all the arithmetic; element-wise work (activations,
normalisation, adds) is left out, as fvcore and timm's tables do.
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
        out_shape = _first(layer.output).shape  # RNNs returning state give a list: the sequence is first
        in_shape = _first(layer.input).shape
    except (AttributeError, ValueError, IndexError):
        return 0
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        kh, kw = layer.kernel_size
        return 2 * math.prod(out_shape[1:]) * kh * kw
    if isinstance(layer, keras.layers.SeparableConv2D):  # depthwise k x k, then pointwise 1 x 1
        kh, kw = layer.kernel_size
        cin = in_shape[-1]
        return 2 * math.prod(out_shape[1:3]) * cin * (kh * kw * layer.depth_multiplier + out_shape[-1])
    if isinstance(layer, keras.layers.Conv2D):
        kh, kw = layer.kernel_size
        cin = in_shape[-1] // layer.groups
        return 2 * math.prod(out_shape[1:]) * kh * kw * cin
    if isinstance(layer, keras.layers.Dense):
        return 2 * math.prod(out_shape[1:]) * in_shape[-1]
    if isinstance(layer, keras.layers.Bidirectional):
        return 2 * _recurrent_flops(layer.forward_layer, in_shape)
    if isinstance(layer, (keras.layers.GRU, keras.layers.LSTM)):
        return _recurrent_flops(layer, in_shape)
    if type(layer).__name__ == "GraphConv":  # X W (twice for GraphSAGE) and the N x N propagation
        nodes, features = in_shape[1], in_shape[2]
        if layer.aggregation == "sage":
            return 2 * (2 * nodes * features * layer.units + nodes * nodes * features)
        return 2 * (nodes * features * layer.units + nodes * nodes * layer.units)
    if type(layer).__name__ == "TransformerEncoder":  # KerasHub's block: attention + feed-forward
        steps, width = in_shape[1], in_shape[2]
        macs = 4 * steps * width * width + 2 * steps * steps * width + 2 * steps * width * layer.intermediate_dim
        return 2 * macs
    return 0


def _first(tensors):
    return tensors[0] if isinstance(tensors, (list, tuple)) else tensors


def _recurrent_flops(layer, in_shape):
    gates = 3 if isinstance(layer, keras.layers.GRU) else 4
    steps, features, units = in_shape[1], in_shape[-1], layer.units
    return 2 * steps * gates * units * (features + units)
