"""Node classification: any registered graph backbone + a per-node softmax head, semi-supervised.

The model takes one graph ({"features": (1, N, F), "adjacency": (1, N, N)}) and returns class
probabilities for every node, (1, N, C). Training sees the labels of the training nodes only:
the loss is weighted by a 0/1 mask over nodes (Keras `sample_weight`), so plain `model.fit`
trains it. Labels of -1 mark nodes that are not scored. Headline metric: accuracy; macro F1 beside it.
"""

import keras
import numpy as np

from toolkit import backbones
from toolkit.errors import ToolkitError
from toolkit.heads.classification import probabilities_head
from toolkit.tasks.text_classification import score as _score
import toolkit.tasks.registry as registry

METRIC = "accuracy"


def build(backbone="gcn", num_nodes=34, num_features=8, num_classes=2, head_dropout=0.5, **backbone_options):
    if num_classes < 2:
        raise ToolkitError(f"node classification needs at least 2 classes, got {num_classes}")
    backbones.require_kind(backbone, "graph")
    feature_model = backbones.get(backbone, (num_nodes, num_features), **backbone_options)
    inputs = {
        "features": keras.Input((num_nodes, num_features), name="features"),
        "adjacency": keras.Input((num_nodes, num_nodes), name="adjacency"),
    }
    outputs = probabilities_head(feature_model(inputs)["sequence"], num_classes, head_dropout)
    return keras.Model(inputs, outputs, name="node_classifier")


def compile(model, learning_rate=1e-2, total_steps=None, weight_decay=5e-4):
    """Adam with weight decay at a constant rate (Kipf & Welling's setting: full-graph steps, one per
    epoch, where a decay schedule did not help), masked sparse cross-entropy. total_steps is taken for
    the shared compile(model, learning_rate, total_steps) signature and not used."""
    model.compile(
        optimizer=keras.optimizers.AdamW(learning_rate, weight_decay=weight_decay),
        loss="sparse_categorical_crossentropy",
        weighted_metrics=[keras.metrics.SparseCategoricalAccuracy(name=METRIC)],
    )
    return model


def masked_labels(labels, nodes):
    """(1, N) labels with -1 everywhere but `nodes`: what `score` and the verify path take."""
    out = np.full((1, len(labels)), -1, np.int64)
    out[0, nodes] = labels[nodes]
    return out


def training_data(data_inputs, labels, nodes):
    """(inputs, labels, sample weights) for model.fit: the loss counts `nodes` only."""
    import tensorflow as tf

    weights = np.zeros((1, len(labels)), np.float32)
    weights[0, nodes] = 1.0
    return tf.data.Dataset.from_tensors((data_inputs, labels[None].astype(np.int64), weights))


def score(probabilities, labels):
    """Accuracy and macro F1 over the nodes whose label is not -1."""
    probabilities = np.asarray(probabilities).reshape(-1, np.asarray(probabilities).shape[-1])
    labels = np.asarray(labels).reshape(-1)
    scored = labels >= 0
    return _score(probabilities[scored], labels[scored])


TASK = registry.register(registry.Task(
    name="node_classification", recipe="node_classification", metric=METRIC, build=build, compile=compile,
    score=score, description="graph (features, adjacency) -> class probabilities per node",
))  # fmt: skip
