"""Image classification: any registered vision backbone + a pooled softmax head.

The model takes raw pixels (0..255, normalisation is inside the backbone) and returns class
probabilities; the headline metric is top-1 accuracy ("top1").
"""

import keras
import numpy as np

from toolkit import backbones
from toolkit.errors import ToolkitError
from toolkit.heads.classification import classification_head
import toolkit.tasks.registry as registry

METRIC = "top1"


def build(
    backbone="edgenet_lite", input_shape=(28, 28, 1), num_classes=10, level="P5", head_dropout=0.2, **backbone_options
):
    """The task model: image -> backbone (a nested model named after it) -> head -> probabilities."""
    if num_classes < 2:
        raise ToolkitError(f"classification needs at least 2 classes, got {num_classes}")
    if level not in backbones.PYRAMID_LEVELS:
        raise ToolkitError(f"unknown pyramid level {level!r}; valid: {', '.join(backbones.PYRAMID_LEVELS)}")
    feature_model = backbones.get(backbone, input_shape, **backbone_options)
    inputs = keras.Input(input_shape, name="image")
    features = feature_model(inputs)
    outputs = classification_head(features[level], num_classes, head_dropout)
    return keras.Model(inputs, outputs, name="classifier")


def compile(model, learning_rate=3e-3, total_steps=1000, weight_decay=0.05, warmup_fraction=0.05, metric=METRIC):
    """AdamW with linear warm-up into cosine decay, sparse cross-entropy, accuracy named `metric`."""
    schedule = registry.warmup_cosine(learning_rate, total_steps, warmup_fraction)
    model.compile(
        optimizer=keras.optimizers.AdamW(schedule, weight_decay=weight_decay),
        loss="sparse_categorical_crossentropy",
        metrics=[keras.metrics.SparseCategoricalAccuracy(name=metric)],
    )
    return model


def score(probabilities, labels):
    """Top-1 accuracy of class probabilities against integer labels."""
    probabilities, labels = np.asarray(probabilities), np.asarray(labels)
    return {METRIC: float(np.mean(np.argmax(probabilities, axis=-1) == labels))}


def confusion_matrix(probabilities, labels, num_classes):
    matrix = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(matrix, (np.asarray(labels), np.argmax(probabilities, axis=-1)), 1)
    return matrix


TASK = registry.register(registry.Task(
    name="classification", recipe="classification", metric=METRIC, build=build, compile=compile, score=score,
    description="image -> class probabilities",
))  # fmt: skip
