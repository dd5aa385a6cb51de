"""Graph backbones: node features and a dense adjacency in, per-node features out.

    inputs  {"features": (B, N, F), "adjacency": (B, N, N)}   (raw, unnormalised adjacency)
    outputs {"sequence": (B, N, D) per-node features, "pooled": (B, D) mean over nodes}

the same output contract as the text backbones, so the same heads and export path apply. The
propagation matrix is computed inside the model from the raw adjacency (so an exported model
takes a graph as it is), with `keras.ops` only: it runs on every backend, and converts to
builtin LiteRT ops (BatchMatMul, Sum, Rsqrt). Dense matrices suit graphs of up to a few thousand
nodes, which is where a single on-device graph lives; bigger graphs want sparse ops and sampling.

- `gcn`: Kipf & Welling (2017): H' = relu(D^-1/2 (A + I) D^-1/2 H W).
- `graphsage`: Hamilton et al. (2017), mean aggregator: H' = relu(H W_self + mean_neighbours(H) W_neigh).
"""

import keras
from keras import ops

from toolkit.backbones.registry import register


@keras.saving.register_keras_serializable(package="toolkit")
class Propagation(keras.layers.Layer):
    """Raw adjacency (B, N, N) -> "symmetric": D^-1/2 (A + I) D^-1/2, or "mean": row-normalised A.

    factored=True (what the backbones build) returns the raw matrix and the per-node scale apart, [A,
    D^-1/2 (B, N, 1)] with D the degree counting the self loop, or [A, 1/D]; GraphConv applies the
    scale to the (N, units) features on both sides of the product instead of to the (N, N) matrix,
    and adds the self loop after the product ((A + I) h = A h + h). The same figures with two N x N
    multiplications fewer and no N x N identity: a constant of N * N floats in every exported file
    (175 KB of the 192 KB fp32 file at 209 nodes) and an N x N addition. The matrix holds the exact
    0/1 of the graph, not per-tensor int8 steps of 1/sqrt(d_i d_j). (Not factored: run folders
    written before; factored folders written before the self loop moved load with the same figures.)"""

    def __init__(self, mode="symmetric", factored=False, **kwargs):
        super().__init__(**kwargs)
        self.mode, self.factored = mode, bool(factored)

    def call(self, adjacency):
        if self.mode == "mean":
            inverse = 1.0 / ops.maximum(ops.sum(adjacency, axis=-1, keepdims=True), 1e-6)
            return [adjacency, inverse] if self.factored else adjacency * inverse
        scale = ops.rsqrt(ops.sum(adjacency, axis=-1) + 1.0)  # the degree with the self loop: >= 1
        if self.factored:
            return [adjacency, ops.expand_dims(scale, -1)]
        a = adjacency + ops.eye(ops.shape(adjacency)[-1], dtype=adjacency.dtype)
        return a * ops.expand_dims(scale, -1) * ops.expand_dims(scale, -2)

    def get_config(self):
        return {**super().get_config(), "mode": self.mode, "factored": self.factored}


@keras.saving.register_keras_serializable(package="toolkit")
class GraphConv(keras.layers.Layer):
    """One graph convolution: "gcn" = P H W + b; "sage" = H W_self + P H W_neigh + b (P row-normalised).
    inputs: [H, P] or, from a factored Propagation, [H, A, scale] with P = diag(scale) A for "sage"
    and P = diag(scale) (A + I) diag(scale) for "gcn" (the self loop added after the product)."""

    def __init__(self, units, aggregation="gcn", activation="relu", **kwargs):
        super().__init__(**kwargs)
        self.units, self.aggregation, self.activation = units, aggregation, keras.activations.get(activation)

    def build(self, input_shape):
        features = input_shape[0][-1]
        self.kernel = self.add_weight(shape=(features, self.units), initializer="glorot_uniform", name="kernel")
        if self.aggregation == "sage":
            self.neighbour_kernel = self.add_weight(
                shape=(features, self.units), initializer="glorot_uniform", name="neighbour_kernel"
            )
        self.bias = self.add_weight(shape=(self.units,), initializer="zeros", name="bias")

    def call(self, inputs):
        nodes, matrix, *scale = inputs
        scale = scale[0] if scale else None
        if self.aggregation == "sage":
            neighbours = ops.matmul(matrix, nodes) if scale is None else scale * ops.matmul(matrix, nodes)
            out = ops.matmul(nodes, self.kernel) + ops.matmul(neighbours, self.neighbour_kernel)
        elif scale is None:
            out = ops.matmul(matrix, ops.matmul(nodes, self.kernel))
        else:
            scaled = scale * ops.matmul(nodes, self.kernel)
            out = scale * (ops.matmul(matrix, scaled) + scaled)
        return self.activation(out + self.bias)

    def compute_output_shape(self, input_shape):
        return (*input_shape[0][:-1], self.units)

    def get_config(self):
        return {
            **super().get_config(),
            "units": self.units,
            "aggregation": self.aggregation,
            "activation": keras.activations.serialize(self.activation),
        }


def _graph_backbone(name, aggregation, input_shape, width, depth, dropout):
    nodes, features = input_shape
    x_in = keras.Input((nodes, features), name="features")
    adjacency = keras.Input((nodes, nodes), name="adjacency")
    propagation = Propagation("mean" if aggregation == "sage" else "symmetric", factored=True,
                              name="propagation")(adjacency)  # fmt: skip
    x = x_in
    for i in range(depth):
        if dropout:
            x = keras.layers.Dropout(dropout, name=f"dropout_{i}")(x)
        x = GraphConv(width, aggregation, name=f"graph_conv_{i}")([x, *propagation])
    pooled = keras.layers.GlobalAveragePooling1D(name="pooled")(x)
    return keras.Model({"features": x_in, "adjacency": adjacency}, {"sequence": x, "pooled": pooled}, name=name)


@register(
    "gcn", kind="graph", provider="toolkit", min_size=1,
    description="graph convolutions (Kipf & Welling) on the symmetric-normalised adjacency",
)  # fmt: skip
def gcn(input_shape=(34, 8), width=32, depth=2, dropout=0.5):
    return _graph_backbone("gcn", "gcn", input_shape, width, depth, dropout)


@register(
    "graphsage", kind="graph", provider="toolkit", min_size=1,
    description="GraphSAGE mean aggregation: own features + mean of the neighbours', separate weights",
)  # fmt: skip
def graphsage(input_shape=(34, 8), width=32, depth=2, dropout=0.5):
    return _graph_backbone("graphsage", "sage", input_shape, width, depth, dropout)
