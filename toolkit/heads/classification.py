"""Classification heads: pooled features -> dropout -> softmax dense. Images pool their feature
map first; text backbones already give a pooled vector."""

import keras
import numpy as np
from keras import layers, ops


def probabilities_head(pooled, num_classes, dropout=0.2, name="classification"):
    x = layers.Dropout(dropout, name=f"{name}_dropout")(pooled) if dropout else pooled
    # float32 probabilities even under mixed precision, so int8 export calibrates on real ranges.
    return layers.Dense(num_classes, activation="softmax", dtype="float32", name=f"{name}_probs")(x)


def classification_head(features, num_classes, dropout=0.2, name="classification"):
    pooled = layers.GlobalAveragePooling2D(name=f"{name}_pool")(features)
    return probabilities_head(pooled, num_classes, dropout, name)


@keras.saving.register_keras_serializable(package="toolkit")
class NgramLogits(layers.Layer):
    """The "wide" half of a wide-and-deep text classifier: a linear model on the token unigrams and
    hashed bigrams of each text, as NBSVM and fastText's bigram features are, inside the model.

    token ids (B, T) (0 = padding) -> per-class logits (B, C): the sum of one learned row per
    unigram id and per bigram bucket ((a * vocabulary_size + b) mod buckets, both ids non-zero),
    divided by the square root of their number (a long text is more evidence, not proportionally
    more). Gather, multiply, add and floor-mod only, so every LiteRT file keeps builtin ops. The rows
    start at zero, or at naive-Bayes log-count ratios (`set_naive_bayes`, as NBSVM's features are
    weighted). Why our own layer: Keras' hashing layers hash strings or run outside the graph's
    integer ops, and the bigram ids must be computed on the token ids that reach the exported model."""

    def __init__(self, vocabulary_size, num_classes, buckets=65536, **kwargs):
        super().__init__(**kwargs)
        self.vocabulary_size, self.num_classes, self.buckets = int(vocabulary_size), int(num_classes), int(buckets)

    def build(self, input_shape):
        self.unigrams = self.add_weight(shape=(self.vocabulary_size, self.num_classes), initializer="zeros",
                                        name="unigrams")  # fmt: skip
        self.bigrams = self.add_weight(shape=(self.buckets, self.num_classes), initializer="zeros", name="bigrams")

    def call(self, tokens):
        tokens = ops.cast(tokens, "int32")
        first, second = tokens[:, :-1], tokens[:, 1:]
        present = ops.cast(tokens > 0, self.compute_dtype)
        pair = ops.cast(ops.logical_and(first > 0, second > 0), self.compute_dtype)
        buckets = ops.mod(first * self.vocabulary_size + second, self.buckets)
        total = ops.sum(ops.take(self.unigrams, tokens, axis=0) * present[..., None], axis=1)
        total = total + ops.sum(ops.take(self.bigrams, buckets, axis=0) * pair[..., None], axis=1)
        count = ops.sum(present, axis=1, keepdims=True) + ops.sum(pair, axis=1, keepdims=True)
        return total / ops.sqrt(ops.maximum(count, 1.0))

    def ids(self, tokens):
        """numpy: each text's distinct (unigram id, vocabulary_size + bigram bucket) feature ids, the
        buckets computed in int32 as `call` computes them (a product past 2**31 wraps the same way)."""
        tokens = np.asarray(tokens, np.int32)
        first, second = tokens[:, :-1], tokens[:, 1:]
        buckets = (first * np.int32(self.vocabulary_size) + second) % np.int32(self.buckets)
        buckets = np.where((first > 0) & (second > 0), buckets, -1)
        return [np.concatenate([np.unique(u[u > 0]), self.vocabulary_size + np.unique(b[b >= 0])])
                for u, b in zip(tokens, buckets)]  # fmt: skip

    def set_naive_bayes(self, tokens, labels, alpha=1.0):
        """Rows := multinomial naive Bayes' log-probabilities of each n-gram per class (binary counts
        over the texts, add-alpha smoothed), centred over the classes: the linear model starts as
        the classifier NBSVM weights its features with, and training refines it."""
        counts = np.full((self.num_classes, self.vocabulary_size + self.buckets), alpha)
        for features, label in zip(self.ids(tokens), np.asarray(labels)):
            counts[int(label), features] += 1
        log_probabilities = np.log(counts / counts.sum(axis=1, keepdims=True))
        rows = (log_probabilities - log_probabilities.mean(axis=0)).T.astype("float32")
        self.unigrams.assign(rows[: self.vocabulary_size])
        self.bigrams.assign(rows[self.vocabulary_size :])

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.num_classes)

    def get_config(self):
        return {**super().get_config(), "vocabulary_size": self.vocabulary_size, "num_classes": self.num_classes,
                "buckets": self.buckets}  # fmt: skip


def wide_and_deep_head(pooled, tokens, num_classes, vocabulary_size, buckets, dropout=0.2, name="classification"):
    """Softmax over the deep logits (dropout + dense on the backbone's pooled vector) plus the wide
    ones (`NgramLogits` on the same token ids)."""
    x = layers.Dropout(dropout, name=f"{name}_dropout")(pooled) if dropout else pooled
    deep = layers.Dense(num_classes, dtype="float32", name=f"{name}_logits")(x)
    wide = NgramLogits(vocabulary_size, num_classes, buckets, dtype="float32", name=f"{name}_ngrams")(tokens)
    return layers.Softmax(dtype="float32", name=f"{name}_probs")(layers.Add(name=f"{name}_sum")([deep, wide]))
