"""Small layers the text backbones share (registered, so safe_mode loads them)."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="toolkit")
class PaddingMask(keras.layers.Layer):
    """token ids -> bool mask of real tokens (id 0 is padding). A layer, not a Lambda: safe_mode loads it."""

    def call(self, tokens):
        return keras.ops.not_equal(tokens, 0)

    def compute_output_spec(self, tokens):
        return keras.KerasTensor(tokens.shape, dtype="bool")


@keras.saving.register_keras_serializable(package="toolkit")
class ReverseRealTokens(keras.layers.Layer):
    """Padding mask (B, T) -> (B, T, T) matrices that reverse each text's real tokens in place
    ([a b c pad pad] -> [c b a pad pad]) when multiplied with a (B, T, D) sequence; padding stays
    at the end, so a plain forward recurrence over the result reads each text backwards. Applying
    the same matrix again undoes it. Builtin LiteRT ops only (OneHot/Select, BatchMatMul)."""

    def call(self, mask):
        steps = ops.shape(mask)[1]
        lengths = ops.sum(ops.cast(mask, "int32"), axis=1, keepdims=True)
        position = ops.expand_dims(ops.arange(steps, dtype="int32"), 0)
        source = ops.where(position < lengths, lengths - 1 - position, position)
        return ops.one_hot(source, steps, dtype=self.compute_dtype)

    def compute_output_spec(self, mask):
        return keras.KerasTensor((*mask.shape, mask.shape[1]), dtype=self.compute_dtype)


@keras.saving.register_keras_serializable(package="toolkit")
class Reorder(keras.layers.Layer):
    """[(B, T, T) reordering matrices, (B, T, D) sequence] -> the reordered sequence. The padding mask
    is passed on explicitly by the backbone, so an incoming Keras mask is consumed here."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True

    def compute_mask(self, inputs, mask=None):
        return None

    def call(self, inputs):
        matrices, sequence = inputs
        return ops.matmul(matrices, sequence)

    def compute_output_shape(self, input_shape):
        return input_shape[1]


@keras.saving.register_keras_serializable(package="toolkit")
class TiedEmbedding(keras.layers.Embedding):
    """An embedding whose transpose also gives the output logits (weight tying: Press & Wolf 2017,
    Inan et al. 2017): `layer(ids)` embeds, `layer(vectors, reverse=True)` -> vectors @ E^T + bias.
    KerasHub's ReversibleEmbedding does the same without the output bias; with a small vocabulary
    the bias carries the unigram frequencies the tied matrix would otherwise have to learn, so we
    keep our own. The reverse call passes the incoming (B, T) mask on unchanged."""

    def build(self, input_shape=None):
        super().build(input_shape)
        self.reverse_bias = self.add_weight(shape=(self.input_dim,), initializer="zeros", name="reverse_bias")

    @property
    def variable_serialization_spec(self):  # Embedding saves only what this lists
        spec = dict(super().variable_serialization_spec)
        spec[None] = [*spec[None], "reverse_bias"]
        return spec

    def call(self, inputs, reverse=False):
        if not reverse:
            return super().call(inputs)
        return ops.matmul(inputs, ops.transpose(self.embeddings)) + self.reverse_bias

    def compute_mask(self, inputs, mask=None):
        if mask is not None or "float" in str(getattr(inputs, "dtype", "")):
            return mask  # the reverse call: the sequence's own mask
        return super().compute_mask(inputs, mask)

    def compute_output_spec(self, inputs, reverse=False):
        if reverse:
            return keras.KerasTensor((*inputs.shape[:-1], self.input_dim), dtype=self.compute_dtype)
        return keras.KerasTensor((*inputs.shape, self.output_dim), dtype=self.compute_dtype)
