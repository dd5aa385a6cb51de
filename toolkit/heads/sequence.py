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
    """token ids (B, T) -> a zero recurrent state (B, width), or (B, *width) for a state of several
    axes (a pointer window's keys): a language model starts from nothing."""

    def __init__(self, width, state_dtype=None, **kwargs):
        super().__init__(**kwargs)
        self.width, self.state_dtype = width, state_dtype  # state_dtype: e.g. int32 for a window of token ids
        self._shape = tuple(width) if isinstance(width, (list, tuple)) else (width,)

    def call(self, tokens):
        return ops.zeros((ops.shape(tokens)[0], *self._shape), dtype=self.state_dtype or self.compute_dtype)

    def compute_output_spec(self, tokens):
        return keras.KerasTensor((tokens.shape[0], *self._shape), dtype=self.state_dtype or self.compute_dtype)

    def get_config(self):
        return {**super().get_config(), "width": self.width, "state_dtype": self.state_dtype}


def zero_states(state_inputs, tokens, prefix="zero_"):
    """{name: a zero state for each of a causal backbone's state inputs}, batched like `tokens`: a
    language model, a classifier or an encoder reading from nothing. Integer states (a pointer
    window's token ids) stay integers."""
    return {t.name: ZeroState(list(t.shape[1:]), "int32" if "int" in str(t.dtype) else None,
                              name=f"{prefix}{t.name}")(tokens)
            for t in state_inputs}  # fmt: skip


@keras.saving.register_keras_serializable(package="toolkit")
class TransformerDecoderHead(keras.layers.Layer):
    """A Transformer decoder over an encoder's memory (Vaswani et al. 2017), from KerasHub layers:
    target token + learned position embeddings, then `depth` KerasHub TransformerDecoder blocks
    (causal self-attention, cross-attention to the memory, feed-forward).

    Teacher-forced: {"tokens" (B, T), "memory" (B, S, M), "source_mask" (B, S)} -> (B, T, D).
    Cross caches, once per source (as KerasHub's BART does for cached generation): {"memory"} ->
    {"cross_cache_i" (B, 2, S, H, D/H): block i's cross-attention keys and values of the memory}.
    One cached step, what a device runs once per token: {"tokens" (B, 1), "index" (B, 1) the position
    being fed (the same in every row), "source_mask", "self_cache_i" (B, 2, T, H, D/H) keys and values
    of the tokens fed so far, "cross_cache_i"} -> {"sequence" (B, 1, D), "self_cache_i" with this
    token's keys and values written at `index`}. KerasHub's cached attention writes the cache with a
    dynamic update slice, a builtin LiteRT op, and the causal mask hides the positions not yet written.

    A layer's calls in one functional model must share one output structure (Keras checks a node's
    outputs against its layer's first call), so each mode runs on its own copy (`copy()`): the same
    weights, one mode each.
    """

    def __init__(self, vocabulary_size, sequence_length, embedding_dim=256, intermediate_dim=1024, num_heads=8,
                 depth=2, dropout=0.1, **kwargs):  # fmt: skip
        import keras_hub

        super().__init__(**kwargs)
        self.vocabulary_size, self.sequence_length = vocabulary_size, sequence_length
        self.embedding_dim, self.intermediate_dim, self.num_heads = embedding_dim, intermediate_dim, num_heads
        self.depth, self.dropout = depth, dropout
        self.embedding = keras_hub.layers.TokenAndPositionEmbedding(
            vocabulary_size, sequence_length, embedding_dim, name="target_embedding"
        )
        self.blocks = [
            keras_hub.layers.TransformerDecoder(intermediate_dim, num_heads, dropout=dropout,
                                                name=f"transformer_decoder_{i}")  # fmt: skip
            for i in range(depth)
        ]

    def build(self, input_shape):
        memory = tuple(input_shape["memory"])  # a step-mode copy is built by copy(), which knows it
        self.embedding.build((None, self.sequence_length))
        for block in self.blocks:
            block.build((None, self.sequence_length, self.embedding_dim), memory)
        self.built = True

    def call(self, inputs, training=None):
        if "tokens" not in inputs:
            return self._cross_caches(inputs["memory"])
        tokens, source_mask = inputs["tokens"], inputs["source_mask"]
        if "index" not in inputs:
            memory = inputs["memory"]
            x = self.embedding(tokens)
            padding = ops.not_equal(tokens, 0)
            for block in self.blocks:
                x = block(x, encoder_sequence=memory, decoder_padding_mask=padding,
                          encoder_padding_mask=source_mask, use_causal_mask=True, training=training)  # fmt: skip
            return x
        index = ops.reshape(inputs["index"][:1, :1], ())
        x = self.embedding(tokens, start_index=index)
        caches = {}
        for i, block in enumerate(self.blocks):
            # encoder_sequence only carries the source's shape here: the cross cache holds its keys and values
            x, caches[f"self_cache_{i}"], _ = block(
                x, encoder_sequence=inputs[f"cross_cache_{i}"][:, 0], encoder_padding_mask=source_mask,
                use_causal_mask=True,
                self_attention_cache=inputs[f"self_cache_{i}"], self_attention_cache_update_index=index,
                cross_attention_cache=inputs[f"cross_cache_{i}"], training=False,
            )  # fmt: skip
        return {"sequence": x, **caches}

    def _cross_caches(self, memory):
        return {f"cross_cache_{i}": ops.stack([block._cross_attention_layer._key_dense(memory),
                                               block._cross_attention_layer._value_dense(memory)], axis=1)
                for i, block in enumerate(self.blocks)}  # fmt: skip

    def copy(self, memory_shape):
        """A copy with the same weights, built for a memory of `memory_shape` (batch included)."""
        clone = type(self).from_config(self.get_config())
        clone.build({"memory": memory_shape})
        clone.set_weights(self.get_weights())
        return clone

    def cache_shape(self):
        """(2, T, H, D/H): one block's self-attention cache, without the batch."""
        return (2, self.sequence_length, self.num_heads, self.embedding_dim // self.num_heads)

    def get_config(self):
        return {**super().get_config(), "vocabulary_size": self.vocabulary_size,
                "sequence_length": self.sequence_length, "embedding_dim": self.embedding_dim,
                "intermediate_dim": self.intermediate_dim, "num_heads": self.num_heads, "depth": self.depth,
                "dropout": self.dropout}  # fmt: skip
