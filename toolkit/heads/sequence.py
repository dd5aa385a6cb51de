"""Sequence heads: Luong attention over an encoder's outputs (for decoders), and next-token logits.

Built from keras.ops only (BatchMatMul, Select, Softmax), so a decoder step with attention
converts to builtin LiteRT ops."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="toolkit")
class LuongAttention(keras.layers.Layer):
    """[queries (B, T, D), keys (B, S, D), values (B, S, M), source mask (B, S) bool] -> context (B, T, M).

    Luong et al. 2015 "general" score: the keys are the encoder outputs projected once by the model
    (a Dense without bias), so each decoder step costs one (T x S) product. Padded source positions
    get no weight. Keras masks arriving with the queries are consumed (the loss ignores padding)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True

    def compute_mask(self, inputs, mask=None):
        return None

    def call(self, inputs):
        queries, keys, values, source_mask = inputs
        scores = ops.matmul(queries, ops.transpose(keys, (0, 2, 1)))
        # Padded positions sit 30 below the lowest real score (softmax weight < 1e-13 each), not at
        # -1e9: a quantized file gives the scores one scale, and a -1e9 fill stretched it until every
        # real score fell on one int8 or int16 code (int16x8 and int8 decoders lost 17-95 BLEU).
        floor = ops.min(scores, axis=-1, keepdims=True) - 30.0
        scores = ops.where(ops.expand_dims(source_mask, 1), scores, floor)
        return ops.matmul(ops.softmax(scores, axis=-1), values)

    def compute_output_shape(self, input_shape):
        queries, _, values, _ = input_shape
        return (*queries[:2], values[-1])


def attentional_logits(decoder_sequence, context, width, vocabulary_size):
    """Luong's attentional vector tanh(W [h; c]) and the next-token logits from it."""
    x = keras.layers.Concatenate(name="decoder_and_context")([decoder_sequence, context])
    x = keras.layers.Dense(width, activation="tanh", name="attention_combine")(x)
    return keras.layers.Dense(vocabulary_size, name="logits")(x)


@keras.saving.register_keras_serializable(package="toolkit")
class ZeroState(keras.layers.Layer):
    """token ids (B, T) -> a zero recurrent state (B, width): a language model starts from nothing."""

    def __init__(self, width, **kwargs):
        super().__init__(**kwargs)
        self.width = width

    def call(self, tokens):
        return ops.zeros((ops.shape(tokens)[0], self.width), dtype=self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.width)

    def get_config(self):
        return {**super().get_config(), "width": self.width}
