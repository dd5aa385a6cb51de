"""Recurrent text backbones: token ids in, {"sequence": (B, T, D), "pooled": (B, D)} out.

`birnn` reads a whole text both ways (for understanding tasks); `causal_rnn` reads left to right
and takes and returns its recurrent state explicitly, so a decoder can run one step at a time
(build it with input_shape=(1,) for the step model: the weights are the same at every length).

The recurrences are unrolled over a static sequence length. A Keras GRU/LSTM left as a loop
converts to TensorList ops that the stock LiteRT interpreter rejects; unrolled, the same layer
converts to builtin ops only (FullyConnected, Logistic, Tanh, Select) and matches Keras exactly.
Token id 0 is padding: the embedding masks it, so padded steps leave the state untouched and
"pooled" is the state after each text's last real token.
"""

import keras

from toolkit.backbones.registry import register
from toolkit.backbones.text.layers import PaddingMask, RecentPointer, Reorder, ReverseRealTokens, TiedEmbedding
from toolkit.errors import ToolkitError, choose

CELLS = {"gru": keras.layers.GRU, "lstm": keras.layers.LSTM}
POINTER_STATE_PREFIX = "state_memory_"  # the pointer window's keys and token ids: state, not a recurrent h


def _embed(tokens, vocabulary_size, embedding_dim, dropout, layer=None):
    layer = layer or keras.layers.Embedding(vocabulary_size, embedding_dim, mask_zero=True, name="embedding")
    x = layer(tokens)
    if dropout:
        x = keras.layers.Dropout(dropout, noise_shape=(None, 1, embedding_dim), name="embedding_dropout")(x)
    return x


@register(
    "birnn", kind="text", provider="toolkit", min_size=1,
    description="embedding + stacked bidirectional GRU/LSTM, unrolled (builtin LiteRT ops)",
)  # fmt: skip
def birnn(input_shape=(64,), vocabulary_size=8000, embedding_dim=128, width=64, depth=1, cell="gru", dropout=0.2):
    layer = CELLS[choose("cell", cell, CELLS)]
    tokens = keras.Input(input_shape, dtype="int32", name="tokens")
    padding = PaddingMask(name="padding_mask")(tokens)
    # The backward direction is a forward recurrence over each text's real tokens reversed in place,
    # not Keras' go_backwards: with padding, that path gives outputs that depend on the amount of
    # padding (TensorFlow) or fails outright (torch); this one is exact on every backend (tested).
    reverse = ReverseRealTokens(name="reverse_real_tokens")(padding)
    x = _embed(tokens, vocabulary_size, embedding_dim, dropout)
    for i in range(depth):
        if i:
            x = keras.layers.Dropout(dropout, name=f"dropout_{i}")(x)
        forward, *forward_states = layer(
            width, return_sequences=True, return_state=True, unroll=True, name=f"{cell}_{i}_forward"
        )(x, mask=padding)
        backward, *backward_states = layer(
            width, return_sequences=True, return_state=True, unroll=True, name=f"{cell}_{i}_backward"
        )(Reorder(name=f"reverse_{i}")([reverse, x]), mask=padding)
        backward = Reorder(name=f"unreverse_{i}")([reverse, backward])
        x = keras.layers.Concatenate(name=f"bidirectional_{i}")([forward, backward])
    # pooled = both directions' final h (after each text's last real token, read either way).
    pooled = keras.layers.Concatenate(name="pooled")([forward_states[0], backward_states[0]])
    return keras.Model(tokens, {"sequence": x, "pooled": pooled}, name="birnn")


@register(
    "causal_rnn", kind="text", provider="toolkit", min_size=1,
    description="embedding + stacked left-to-right GRU/LSTM with explicit state in and out (decoders)",
)  # fmt: skip
def causal_rnn(
    input_shape=(64,), vocabulary_size=8000, embedding_dim=128, width=128, depth=1, cell="gru", dropout=0.0,
    tied_output=False, output_dropout=0.0, pointer_window=0, pointer_dropout=0.0, recurrent_dropout=0.0,
):
    """recurrent_dropout: dropout on the state each step reads (Keras' GRU/LSTM option; training only,
    the exported step has none of it).

    tied_output: the backbone also returns next-token "logits" through its own embedding matrix
    (weight tying; a Dense projection from width to embedding_dim first where they differ), with
    `output_dropout` on the sequence before it. The output layer then belongs to the backbone, so a
    preset carries it and a language model started from one keeps what it learnt to predict.

    pointer_window=K > 0 (with tied_output): the logits become the log of a pointer-sentinel mixture
    over the last K tokens (`RecentPointer`: which token followed a context like this one), with the
    window's keys and tokens as two more state entries (state_memory_*), so the one-token step reads
    the same window as the teacher-forced pass. `pointer_dropout` drops the states its query and keys
    read (training only): the generation recipe's pointer model overfitted from epoch 7 without it
    (validation perplexity 10.87 with 0.3 against 11.20; benchmarks/RESULTS.md, issue 18)."""
    layer = CELLS[choose("cell", cell, CELLS)]
    if pointer_window and not tied_output:
        raise ToolkitError("pointer_window needs tied_output=True: the pointer mixes into the backbone's logits")
    if pointer_dropout and not pointer_window:
        raise ToolkitError("pointer_dropout needs pointer_window > 0: it drops what the pointer reads")
    tokens = keras.Input(input_shape, dtype="int32", name="tokens")
    inputs, outputs = {"tokens": tokens}, {}
    # Keras drops the embedding's mask when an RNN is called with initial_state, so pass it explicitly.
    padding = PaddingMask(name="padding_mask")(tokens)
    embedding = TiedEmbedding(vocabulary_size, embedding_dim, mask_zero=True, name="embedding") if tied_output else None
    x = _embed(tokens, vocabulary_size, embedding_dim, dropout, embedding)
    for i in range(depth):
        names = state_names(i, cell)
        initial = [keras.Input((width,), name=name) for name in names]
        inputs.update(zip(names, initial))
        recurrent = layer(width, return_sequences=True, return_state=True, unroll=True,
                          recurrent_dropout=recurrent_dropout, name=f"{cell}_{i}")  # fmt: skip
        x, *states = recurrent(x, initial_state=initial, mask=padding)
        outputs.update(zip(names, states))
    outputs["sequence"] = x
    outputs["pooled"] = outputs[state_names(depth - 1, cell)[0]]  # the last layer's h after the last real token
    if tied_output:
        if output_dropout:
            x = keras.layers.Dropout(output_dropout, name="output_dropout")(x)
        if width != embedding_dim:
            x = keras.layers.Dense(embedding_dim, name="output_projection")(x)
        outputs["logits"] = embedding(x, reverse=True)
    if pointer_window:
        window = int(pointer_window)
        memory = [keras.Input((window, width), name=f"{POINTER_STATE_PREFIX}keys"),
                  keras.Input((window,), dtype="int32", name=f"{POINTER_STATE_PREFIX}tokens")]  # fmt: skip
        inputs.update((t.name, t) for t in memory)
        read = outputs["sequence"]
        if pointer_dropout:
            read = keras.layers.Dropout(pointer_dropout, name="pointer_dropout")(read)
        pointer = RecentPointer(window, name="pointer")
        outputs["logits"], *after = pointer([read, initial[0], tokens, outputs["logits"], *memory])
        outputs.update((t.name, a) for t, a in zip(memory, after))
    return keras.Model(inputs, outputs, name="causal_rnn")


def state_names(layer_index, cell):
    return [f"state_{layer_index}"] if cell == "gru" else [f"state_{layer_index}_h", f"state_{layer_index}_c"]
