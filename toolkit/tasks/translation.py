"""Translation: an encoder-decoder on the shared text backbones, with one of two decoders.

    source ids (B, S) -> encoder backbone (`birnn`, `transformer`, or a causal one such as a text
                         preset's `causal_rnn`, from a zero state) -> memory (B, S, M)
    memory -> attention keys (Dense, once) ; pooled -> bridge (Dense, tanh) -> decoder's initial state
    target ids (B, T) = [START] y1 .. yn -> causal decoder backbone (`causal_rnn`) -> (B, T, D)
    each decoder output attends over the memory -> tanh(W [h; context]) -> logits (B, T, V)

Trained teacher-forced with plain `model.fit` (labels y1 .. yn [END], padding ignored). Attention
comes after the recurrence (Luong), so the decoder backbone is used unchanged and one decoder step
is the same graph at target length 1: `parts(model)` gives the encoder and the decoder step, with
the recurrent state and the encoder's memory as explicit inputs and the new state, the logits and
the attention context as outputs. These are what LiteRT runs; `translate` is the decoding loop.

With decoder="transformer" the decoder is a Transformer instead (`heads.sequence.TransformerDecoderHead`,
KerasHub blocks: causal self-attention, cross-attention to the memory, feed-forward):

    target ids (B, T) + memory (B, S, M) + source mask -> TransformerDecoderHead -> dropout -> logits

and its parts are the encoder (source ids -> memory -> each block's cross-attention keys and values,
once per source) and a cached step (one token, its position and each block's self-attention cache
in; logits and the cache with the token's keys and values written at that position out), the same
loop and engines as the recurrent decoder: the cache and the position are its state.
"""

import keras
import numpy as np

from toolkit import backbones
from toolkit.backbones.text.layers import PaddingMask
from toolkit.backbones.text.rnn import POINTER_STATE_PREFIX
from toolkit.data import tokenizer
from toolkit.errors import ToolkitError
from toolkit.heads.sequence import LuongAttention, TransformerDecoderHead, attentional_logits, zero_states
from toolkit.metrics import translation as translation_metrics
import toolkit.tasks.decoding as decoding
import toolkit.tasks.registry as registry

METRIC = "bleu"
LITERT_FORMATS = ("tflite_fp32", "tflite_dynamic")
PARTS = ("encoder", "decoder_step")
STEP_PART = "decoder_step"  # run once per output token
START, END = tokenizer.START_ID, tokenizer.END_ID  # the target vocabulary's sequence tokens (the tokenizer owns them)
TRANSFORMER = "transformer"  # the decoder that is a Transformer head, not a causal backbone


def build(
    source_length=24,
    target_length=24,
    source_vocabulary_size=1000,
    target_vocabulary_size=1000,
    encoder="birnn",
    decoder="causal_rnn",
    encoder_options=None,
    decoder_options=None,
):
    """{"source_tokens": (B, S), "target_tokens": (B, T)} -> next-token logits (B, T, V).
    decoder: a causal text backbone (causal_rnn) under Luong attention, or "transformer" (a Transformer
    decoder head; decoder_options are the `transformer` backbone's: embedding_dim, intermediate_dim,
    num_heads, depth, dropout)."""
    backbones.require_kind(encoder, "text")
    encoder_model = backbones.get(encoder, (source_length,), vocabulary_size=source_vocabulary_size,
                                  **(encoder_options or {}))  # fmt: skip
    if decoder == TRANSFORMER:
        return _transformer_translator(encoder_model, source_length, target_length, target_vocabulary_size,
                                       decoder_options or {})  # fmt: skip
    backbones.require_kind(decoder, "text")
    decoder_model = backbones.get(decoder, (target_length,), vocabulary_size=target_vocabulary_size,
                                  **(decoder_options or {}))  # fmt: skip
    state_inputs = [t for t in decoder_model.inputs if t.name.startswith("state_")]
    if not state_inputs:
        raise ToolkitError(f"decoder {decoder!r} has no recurrent state; use a causal backbone (causal_rnn)")
    if any(t.name.startswith(POINTER_STATE_PREFIX) for t in state_inputs):
        raise ToolkitError("decoder option pointer_window is for language models: the translation decoder "
                           "attends over the source instead")  # fmt: skip
    # Named wrappers over the same layers: parts() finds them again in a loaded model.
    decoder_model = keras.Model(decoder_model.input, decoder_model.output, name="decoder")

    source, target, encoded = _encode(encoder_model, source_length, target_length)
    memory = keras.layers.Identity(name="memory")(encoded["sequence"])
    width = decoder_model.output["sequence"].shape[-1]
    keys = keras.layers.Dense(width, use_bias=False, name="attention_keys")(memory)
    states = {t.name: keras.layers.Dense(t.shape[-1], activation="tanh", name=f"bridge_{t.name}")(encoded["pooled"])
              for t in state_inputs}  # fmt: skip
    decoded = decoder_model({"tokens": target, **states})
    source_mask = PaddingMask(name="source_mask")(source)
    context = LuongAttention(name="attention")([decoded["sequence"], keys, memory, source_mask])
    logits = attentional_logits(decoded["sequence"], context, width, target_vocabulary_size)
    return keras.Model({"source_tokens": source, "target_tokens": target}, logits, name="translator")


def _encode(encoder_model, source_length, target_length):
    """(source input, target input, the encoder's outputs) with the encoder wrapped as layer "encoder".
    A causal encoder (e.g. a `toolkit pretrain text` preset's causal_rnn) reads the source left to
    right from a zero state; its "pooled" is its state after the last real token."""
    encoder_states = [t for t in encoder_model.inputs if t.name.startswith("state_")]
    encoder_model = keras.Model(encoder_model.input, encoder_model.output, name="encoder")
    source = keras.Input((source_length,), dtype="int32", name="source_tokens")
    target = keras.Input((target_length,), dtype="int32", name="target_tokens")
    if encoder_states:
        zeros = zero_states(encoder_states, source, "encoder_zero_")
        return source, target, encoder_model({"tokens": source, **zeros})
    return source, target, encoder_model(source)


def _transformer_translator(encoder_model, source_length, target_length, vocabulary_size, options):
    source, target, encoded = _encode(encoder_model, source_length, target_length)
    memory = keras.layers.Identity(name="memory")(encoded["sequence"])
    source_mask = PaddingMask(name="source_mask")(source)
    head = TransformerDecoderHead(vocabulary_size, target_length, name="decoder", **options)
    x = head({"tokens": target, "memory": memory, "source_mask": source_mask})
    x = keras.layers.Dropout(head.dropout, name="decoder_dropout")(x)
    logits = keras.layers.Dense(vocabulary_size, name="logits")(x)
    return keras.Model({"source_tokens": source, "target_tokens": target}, logits, name="translator")


def compile(model, learning_rate=3e-3, total_steps=1000, warmup_fraction=0.05, loss=None):
    """Adam with warm-up and cosine decay; cross-entropy on logits, padding (id 0) ignored (or `loss`)."""
    schedule = registry.warmup_cosine(learning_rate, total_steps, warmup_fraction)
    model.compile(
        optimizer=keras.optimizers.Adam(schedule, clipnorm=1.0),
        loss=loss if loss is not None else keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=0),
    )
    return model


def parts(model):
    """{"encoder": source ids -> memory, keys, initial states; "decoder_step": one token -> logits,
    new states, attention context}: the trained model's own layers and weights."""
    source = next(t for t in model.inputs if t.name == "source_tokens")
    decoder = model.get_layer("decoder")
    if isinstance(decoder, TransformerDecoderHead):
        return _transformer_parts(model, source, decoder)
    names = decoding.state_names(decoder)
    memory, keys = model.get_layer("memory").output, model.get_layer("attention_keys").output
    initial = {name: model.get_layer(f"bridge_{name}").output for name in names}
    encoder = keras.Model({"source_tokens": source}, {"memory": memory, "keys": keys, **initial}, name="encoder")

    step_decoder = decoding.at_length(decoder, 1)
    inputs = {
        "tokens": keras.Input((1,), dtype="int32", name="tokens"),
        **{name: keras.Input(tuple(initial[name].shape[1:]), name=name) for name in names},
        "memory": keras.Input(tuple(memory.shape[1:]), name="memory"),
        "keys": keras.Input(tuple(keys.shape[1:]), name="keys"),
        "source_tokens": keras.Input(tuple(source.shape[1:]), dtype="int32", name="source_tokens"),
    }
    out = step_decoder({"tokens": inputs["tokens"], **{name: inputs[name] for name in names}})
    source_mask = PaddingMask(name="source_mask")(inputs["source_tokens"])
    context = model.get_layer("attention")([out["sequence"], inputs["keys"], inputs["memory"], source_mask])
    x = model.get_layer("decoder_and_context")([out["sequence"], context])
    logits = model.get_layer("logits")(model.get_layer("attention_combine")(x))
    outputs = {
        "logits": keras.ops.squeeze(logits, 1),
        **{name: out[name] for name in names},
        "context": keras.ops.squeeze(context, 1),
    }
    return {"encoder": encoder, "decoder_step": keras.Model(inputs, outputs, name="decoder_step")}


def _transformer_parts(model, source, head):
    """{"encoder": source ids -> each block's cross-attention cache; "decoder_step": token, position and
    self-attention caches -> logits and the updated caches}, on copies of the trained head (one mode each)."""
    memory = model.get_layer("memory").output
    cross = head.copy(memory.shape)({"memory": memory})
    encoder = keras.Model({"source_tokens": source}, cross, name="encoder")

    caches = [f"state_cache_{i}" for i in range(head.depth)]
    inputs = {
        "tokens": keras.Input((1,), dtype="int32", name="tokens"),
        "state_index": keras.Input((1,), dtype="int32", name="state_index"),
        **{name: keras.Input(head.cache_shape(), name=name) for name in caches},
        **{name: keras.Input(tuple(t.shape[1:]), name=name) for name, t in cross.items()},
        "source_tokens": keras.Input(tuple(source.shape[1:]), dtype="int32", name="source_tokens"),
    }
    out = head.copy(memory.shape)({
        "tokens": inputs["tokens"], "index": inputs["state_index"],
        "source_mask": PaddingMask(name="source_mask")(inputs["source_tokens"]),
        **{f"self_cache_{i}": inputs[name] for i, name in enumerate(caches)},
        **{name: inputs[name] for name in cross},
    })  # fmt: skip
    logits = model.get_layer("logits")(out["sequence"])
    outputs = {
        "logits": keras.ops.squeeze(logits, 1),
        "state_index": keras.ops.add(inputs["state_index"], 1),
        **{name: out[f"self_cache_{i}"] for i, name in enumerate(caches)},
    }
    return {"encoder": encoder, "decoder_step": keras.Model(inputs, outputs, name="decoder_step")}


def translate(engines, source_tokens, max_length, batch_size=256, sampler=None):
    """Token ids (N, max_length) for source ids (N, S): the greedy reference loop, or a KerasHub
    sampler (e.g. beam search) on the same engines; the encoder runs once per batch."""
    encoder, step = engines["encoder"], engines["decoder_step"]
    outputs = []
    for i in range(0, len(source_tokens), batch_size):
        source = np.asarray(source_tokens[i : i + batch_size], np.int32)
        encoded = {**encoder({"source_tokens": source}), "source_tokens": source}
        # The state the encoder does not give (a Transformer's caches and position) starts at zero.
        names = [k for k in step.specs if k.startswith("state_")]
        state = {**step.zeros([k for k in names if k not in encoded], len(source)),
                 **{k: encoded[k] for k in names if k in encoded}}  # fmt: skip
        constants = {k: encoded[k] for k in step.specs if k != "tokens" and k not in names}
        start = np.full((len(source), 1), START, np.int32)
        if sampler is None:
            outputs.append(decoding.greedy(step, state, start[:, 0], max_length, constants, stop_id=END))
        else:
            outputs.append(decoding.sample(step, state, start, max_length, sampler, constants, stop_id=END))
    return np.concatenate(outputs)


def texts(token_ids, vocabulary):
    return [tokenizer.detokenize(vocabulary, ids, stop_ids=(END,)) for ids in token_ids]


def evaluate(engines, data):
    """(metrics, decoded ids) on a stored test split {"source_tokens", "references", "vocabulary",
    "max_length"}: greedy decoding, detokenised, scored with sacrebleu."""
    decoded = translate(engines, data["source_tokens"], int(data["max_length"]))
    vocabulary = [str(v) for v in data["vocabulary"]]
    return score(decoded, [str(r) for r in data["references"]], vocabulary), decoded


def score(token_ids, references, vocabulary):
    return translation_metrics.score(texts(token_ids, vocabulary), references)


def bleu_lost(keras_bleu, bleu):
    """BLEU is already in points (0..100)."""
    return keras_bleu - bleu


TASK = registry.register(registry.DecoderTask(
    name="translation", recipe="translation", metric=METRIC, build=build, compile=compile, score=score,
    litert_formats=LITERT_FORMATS, parts=parts, evaluate=evaluate, part_names=PARTS, step_part=STEP_PART,
    verb="toolkit translate", drop=bleu_lost,
    description="source token ids -> target token ids (encoder + decoder step, greedy or beam)",
))  # fmt: skip
