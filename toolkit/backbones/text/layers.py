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
