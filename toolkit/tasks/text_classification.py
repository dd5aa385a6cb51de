"""Text classification: any registered text backbone + a softmax head on its pooled vector.

The model takes int32 token ids (0 = padding; tokenisation happens outside, in tf.data) and
returns class probabilities; the headline metric is accuracy, with macro F1 beside it. Exports
as LiteRT fp32, dynamic-range (int8 weights, float activations: what suits recurrent layers)
and full-integer int8, each scored on the whole test split.
"""

import keras
import numpy as np

from toolkit import backbones
from toolkit.errors import ToolkitError
from toolkit.heads.classification import probabilities_head, wide_and_deep_head
from toolkit.heads.sequence import zero_states
import toolkit.tasks.classification as classification
from toolkit.tasks.classification import confusion_matrix  # noqa: F401  (shared with images)
import toolkit.tasks.registry as registry

METRIC = "accuracy"
LITERT_FORMATS = ("tflite_fp32", "tflite_dynamic", "tflite_int8")


def build(
    backbone="birnn", sequence_length=64, num_classes=2, vocabulary_size=8000, head_dropout=0.5, ngram_buckets=0,
    **backbone_options,
):
    """token ids (B, T) -> backbone (a nested model named after it) -> pooled -> probabilities.
    `ngram_buckets` > 0 adds a linear model on the same ids' unigrams and hashed bigrams beside the
    backbone (`heads.classification.wide_and_deep_head`); 0 keeps the backbone alone."""
    if num_classes < 2:
        raise ToolkitError(f"text classification needs at least 2 classes, got {num_classes}")
    backbones.require_kind(backbone, "text")
    feature_model = backbones.get(backbone, (sequence_length,), vocabulary_size=vocabulary_size, **backbone_options)
    tokens = keras.Input((sequence_length,), dtype="int32", name="tokens")
    state_inputs = [t for t in feature_model.inputs if t.name.startswith("state_")]
    if state_inputs:
        # A causal backbone (a language model's, `toolkit pretrain text`) reads the text left to right
        # from a zero state, as ULMFiT's classifier does; pooled is its last state after the last token.
        states = zero_states(state_inputs, tokens)
        pooled = feature_model({"tokens": tokens, **states})["pooled"]
    else:
        pooled = feature_model(tokens)["pooled"]
    if ngram_buckets:
        outputs = wide_and_deep_head(pooled, tokens, num_classes, vocabulary_size, ngram_buckets, head_dropout)
    else:
        outputs = probabilities_head(pooled, num_classes, head_dropout)
    return keras.Model(tokens, outputs, name="text_classifier")


def compile(model, learning_rate=2e-3, total_steps=1000, weight_decay=0.05):
    """The image classifier's schedule (AdamW, warm-up, cosine), with the metric named accuracy."""
    return classification.compile(model, learning_rate, total_steps, weight_decay, metric=METRIC)


def score(probabilities, labels):
    """Accuracy and macro F1 (the mean over classes of each class's F1) of probabilities vs labels."""
    probabilities, labels = np.asarray(probabilities), np.asarray(labels)
    predicted = np.argmax(probabilities, axis=-1)
    f1 = []
    for c in range(probabilities.shape[-1]):
        tp = np.sum((predicted == c) & (labels == c))
        denominator = np.sum(predicted == c) + np.sum(labels == c)
        f1.append(2 * tp / denominator if denominator else 0.0)
    return {METRIC: float(np.mean(predicted == labels)), "f1": float(np.mean(f1))}


TASK = registry.register(registry.Task(
    name="text_classification", recipe="sentiment", metric=METRIC, build=build, compile=compile, score=score,
    litert_formats=LITERT_FORMATS, description="token ids -> class probabilities",
))  # fmt: skip
