"""Small layers the text backbones share (registered, so safe_mode loads them)."""

import keras
import numpy as np
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
    the same matrix again undoes it. Builtin LiteRT ops only (Select, Equal, Cast, BatchMatMul).

    The matrices come from Equal + Cast, not ONE_HOT: the int8 converter quantizes ONE_HOT's on value
    (1.0: 127 at scale 1/255, zero point -128) and off value (0.0: 0 at scale ~4e-9, zero point 0)
    apart, and the kernel copies both raw into the on value's scale, so every 0 read 0.502. The
    translation run's int8 file decoded at BLEU 6.8 against 100 with ONE_HOT, 99.99 with this; the
    float figures are identical (benchmarks/RESULTS.md, issue 19)."""

    def call(self, mask):
        steps = ops.shape(mask)[1]
        lengths = ops.sum(ops.cast(mask, "int32"), axis=1, keepdims=True)
        position = ops.expand_dims(ops.arange(steps, dtype="int32"), 0)
        source = ops.where(position < lengths, lengths - 1 - position, position)
        matches = ops.equal(ops.expand_dims(source, -1), ops.expand_dims(position, 0))  # (B, T, T) bool
        return ops.cast(matches, self.compute_dtype)

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


@keras.saving.register_keras_serializable(package="toolkit")
class RecentPointer(keras.layers.Layer):
    """A pointer over the last `window` tokens of a causal stream, mixed into the next-token
    distribution (Merity et al. 2017's pointer sentinel, over a window carried as state so the
    one-token step reads exactly what the teacher-forced pass read).

    The query is the current state h_t; the key of an earlier position a is the state before it,
    h_(a-1), and what a pointer to a votes for is the token at a. It thus learns "which token
    followed a context like this one": the neural cache (Grave et al. 2017), trained end to end and
    inside the exported step. A sentinel score, in the same softmax as the window's scores, keeps
    the rest of the mass for the vocabulary softmax:
        p(w) = g * softmax(logits)(w) + sum over window positions a with token w of weight(a).
    The pointer can only copy tokens (no values to learn), so it adds a copy mechanism without the
    capacity to memorise training text. Written here: keras.layers.MultiHeadAttention has no state
    that slides across calls, and KerasHub has no pointer-sentinel layer.

    inputs: [sequence (B, T, D), initial (B, D): the state before the first position, tokens
    (B, T) int, logits (B, T, V), memory_keys (B, K, D), memory_tokens (B, K) int32 (0: empty)]
    -> [log p (B, T, V), the two memories after the T positions]. Position t points at positions
    1 to `window` back that hold a real token; the first token of a stream has only the sentinel.

    With a seventh input, targets (B, T) int, the first output is log p of each target only (B, T):
    the vocabulary part through a log-sum-exp of the logits and the copy part through the window's
    matches, O(B T (K+T)), without the (B, T, V) mixture, its one-hot matmul over the vocabulary
    and the passes back through them. The same figures; a training step 13% shorter for the
    generation recipe's model (language_model.trainer, benchmarks/RESULTS.md issue 18)."""

    def __init__(self, window, **kwargs):
        super().__init__(**kwargs)
        self.window = int(window)
        self.query = self.key = self.sentinel = None  # built for the sequence's width

    def build(self, input_shapes):
        sequence = input_shapes[0]
        width = sequence[-1]
        self.query = keras.layers.Dense(width, use_bias=False, name="query")
        self.key = keras.layers.Dense(width, use_bias=False, name="key")
        self.query.build(sequence)
        self.key.build(sequence)
        self.sentinel = self.add_weight(shape=(width,), initializer="zeros", name="sentinel")
        # The sentinel starts with most of the mass (about 0.9 against K untrained pointers): with no
        # head start the vocabulary softmax began at 1/(K+1) of it and training was slower and worse
        # (pydoc validation loss 2.857 against 2.560 without the pointer, 10 epochs).
        start = float(np.log(self.window) + 2.0)
        self.sentinel_bias = self.add_weight(shape=(), initializer=keras.initializers.Constant(start),
                                             name="sentinel_bias")  # fmt: skip

    def call(self, inputs):
        sequence, initial, tokens, logits, memory_keys, memory_tokens, *targets = inputs
        length, window, width = sequence.shape[1], self.window, sequence.shape[-1]
        previous = ops.concatenate([initial[:, None, :], sequence[:, :-1]], axis=1)  # h_(t-1) for each t
        keys = ops.concatenate([memory_keys, self.key(previous)], axis=1)  # (B, K+T, D)
        ids = ops.concatenate([memory_tokens, ops.cast(tokens, "int32")], axis=1)  # (B, K+T), int32
        # Band: query t sits at K+t in the concatenation and points at a when 1 <= K+t-a <= K (static).
        distance = window + np.arange(length)[:, None] - np.arange(window + length)[None, :]
        band = ops.convert_to_tensor(((distance >= 1) & (distance <= window)).astype("float32"))
        allowed = band[None] * ops.cast(ids[:, None, :] > 0, self.compute_dtype)  # (B, T, K+T)
        query = self.query(sequence)
        scale = np.float32(1.0 / np.sqrt(width))
        scores = ops.matmul(query, ops.transpose(keys, (0, 2, 1))) * scale + (allowed - 1.0) * 1e9
        sentinel = ops.sum(query * self.sentinel, axis=-1, keepdims=True) * scale + self.sentinel_bias  # (B, T, 1)
        top = ops.maximum(ops.max(scores, axis=-1, keepdims=True), sentinel)
        pointer = ops.exp(scores - top) * allowed
        gate = ops.exp(sentinel - top)
        total = ops.sum(pointer, axis=-1, keepdims=True) + gate
        memories = [keys[:, -window:], ids[:, -window:]]
        if targets:  # p(target) = (gate * softmax(logits)(target) + pointer mass on the target) / total
            targets = ops.cast(targets[0], "int32")
            matches = ops.cast(ops.equal(ids[:, None, :], targets[:, :, None]), self.compute_dtype)  # (B, T, K+T)
            copied = ops.sum(pointer * matches, axis=-1)
            picked = ops.squeeze(ops.take_along_axis(logits, targets[..., None], axis=-1), -1)
            vocabulary = ops.exp(picked - ops.logsumexp(logits, axis=-1)) * ops.squeeze(gate, -1)
            log_p = ops.log(ops.maximum(vocabulary + copied, 1e-30)) - ops.log(ops.squeeze(total, -1))
            return [log_p, *memories]
        vocabulary = logits.shape[-1]
        copied = ops.matmul(pointer / total, ops.one_hot(ids, vocabulary, dtype=self.compute_dtype))
        probabilities = (gate / total) * ops.softmax(logits, axis=-1) + copied
        log_p = ops.log(ops.maximum(probabilities, 1e-30))
        return [log_p, *memories]

    def compute_mask(self, inputs, mask=None):
        return [None if mask is None else mask[3], None, None]

    def compute_output_spec(self, inputs):
        logits, memory_keys, memory_tokens = inputs[3], inputs[4], inputs[5]
        first = inputs[6].shape if len(inputs) > 6 else logits.shape  # with targets: one figure per target
        return [keras.KerasTensor(first, dtype=self.compute_dtype),
                keras.KerasTensor(memory_keys.shape, dtype=self.compute_dtype),
                keras.KerasTensor(memory_tokens.shape, dtype="int32")]  # fmt: skip

    def get_config(self):
        return {**super().get_config(), "window": self.window}
