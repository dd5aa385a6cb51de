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


@keras.saving.register_keras_serializable(package="toolkit")
class SmoothedSparseCrossentropy(keras.losses.Loss):
    """Cross-entropy of probabilities against integer labels smoothed towards uniform (Szegedy et al.
    2016): the target is 1 - smoothing on the label and smoothing / classes everywhere. Keras'
    sparse cross-entropy has no smoothing, and one-hot labels would change every data pipeline."""

    def __init__(self, smoothing=0.1, name="smoothed_sparse_crossentropy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.smoothing = float(smoothing)

    def call(self, y_true, y_pred):
        from keras import ops

        classes = y_pred.shape[-1]
        labels = ops.reshape(ops.cast(y_true, "int32"), ops.shape(y_pred)[:-1])
        target = ops.one_hot(labels, classes) * (1.0 - self.smoothing) + self.smoothing / classes
        log_p = ops.log(ops.clip(y_pred, keras.backend.epsilon(), 1.0))
        return -ops.sum(target * log_p, axis=-1)

    def get_config(self):
        return {**super().get_config(), "smoothing": self.smoothing}


def compile(model, learning_rate=3e-3, total_steps=1000, weight_decay=0.05, warmup_fraction=0.05, metric=METRIC,
            label_smoothing=0.0):  # fmt: skip
    """AdamW with linear warm-up into cosine decay, sparse cross-entropy (smoothed by label_smoothing),
    accuracy named `metric`."""
    schedule = registry.warmup_cosine(learning_rate, total_steps, warmup_fraction)
    loss = SmoothedSparseCrossentropy(label_smoothing) if label_smoothing else "sparse_categorical_crossentropy"
    model.compile(
        optimizer=keras.optimizers.AdamW(schedule, weight_decay=weight_decay),
        loss=loss,
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
