"""Small layers the text backbones share (registered, so safe_mode loads them)."""

import keras


@keras.saving.register_keras_serializable(package="toolkit")
class PaddingMask(keras.layers.Layer):
    """token ids -> bool mask of real tokens (id 0 is padding). A layer, not a Lambda: safe_mode loads it."""

    def call(self, tokens):
        return keras.ops.not_equal(tokens, 0)

    def compute_output_spec(self, tokens):
        return keras.KerasTensor(tokens.shape, dtype="bool")
