"""Causal language model: the causal text backbone + a next-token softmax, and its one-token step.

    token ids (B, T) -> causal backbone (zero initial state) -> (B, T, D) -> logits (B, T, V)

Trained with plain `model.fit` on fixed windows of a token stream (labels: the window shifted by
one). `parts(model)` gives the single step (one token and the state in; logits and the new state
out), which LiteRT runs; perplexity and greedy continuations are computed by driving that step, on
Keras and on LiteRT alike, so both are measured by the same loop.
"""

import keras
import numpy as np

from toolkit import backbones
from toolkit.errors import ToolkitError
from toolkit.heads.sequence import ZeroState
from toolkit.metrics import language_model as lm_metrics
import toolkit.tasks.decoding as decoding
import toolkit.tasks.registry as registry

METRIC = "perplexity"
LITERT_FORMATS = ("tflite_fp32", "tflite_dynamic")
PARTS = ("step",)
STEP_PART = "step"


def build(backbone="causal_rnn", sequence_length=64, vocabulary_size=2000, head_dropout=0.0, **backbone_options):
    """token ids (B, T) -> next-token logits (B, T, V); the recurrent state starts at zero.
    head_dropout: dropout on the backbone's sequence before the logits (Zaremba et al.'s output
    dropout; training only, so the exported step is unchanged)."""
    backbones.require_kind(backbone, "text")
    feature_model = backbones.get(backbone, (sequence_length,), vocabulary_size=vocabulary_size, **backbone_options)
    state_inputs = [t for t in feature_model.inputs if t.name.startswith("state_")]
    if not state_inputs:
        raise ToolkitError(f"backbone {backbone!r} has no recurrent state; use a causal backbone (causal_rnn)")
    decoder = keras.Model(feature_model.input, feature_model.output, name="decoder")
    decoder.toolkit_spec = feature_model.toolkit_spec  # the same layers: its preset is the backbone's
    tokens = keras.Input((sequence_length,), dtype="int32", name="tokens")
    states = {t.name: ZeroState(t.shape[-1], name=f"zero_{t.name}")(tokens) for t in state_inputs}
    sequence = decoder({"tokens": tokens, **states})["sequence"]
    if head_dropout:
        sequence = keras.layers.Dropout(head_dropout, name="head_dropout")(sequence)
    logits = keras.layers.Dense(vocabulary_size, name="logits")(sequence)
    return keras.Model(tokens, logits, name="language_model")


def compile(model, learning_rate=3e-3, total_steps=1000, warmup_fraction=0.05):
    import toolkit.tasks.translation as translation

    return translation.compile(model, learning_rate, total_steps, warmup_fraction)  # the same schedule and loss


def parts(model):
    """{"step": {"tokens": (B, 1), state...} -> {"logits": (B, V), state...}} with the model's weights."""
    decoder = decoding.at_length(model.get_layer("decoder"), 1)
    names = decoding.state_names(decoder)
    inputs = {"tokens": keras.Input((1,), dtype="int32", name="tokens")}
    inputs.update({t.name: keras.Input(tuple(t.shape[1:]), name=t.name) for t in decoder.inputs if t.name in names})
    out = decoder(inputs)
    logits = model.get_layer("logits")(out["sequence"])
    outputs = {"logits": keras.ops.squeeze(logits, 1)}
    outputs.update({name: out[name] for name in names})
    return {"step": keras.Model(inputs, outputs, name="step")}


def negative_log_likelihoods(step, windows):
    """NLL (nats) of tokens 1..L of each window (N, L+1) given those before it in the window, by
    running the step over all windows at once from a zero state; padding targets (0) are skipped."""
    windows = np.asarray(windows, np.int32)
    names = [k for k in step.specs if k.startswith("state_")]
    state = step.zeros(names, len(windows))
    values = []
    for t in range(windows.shape[1] - 1):
        out = step({"tokens": windows[:, t : t + 1], **state})
        state = {k: out[k] for k in names}
        logits = out["logits"].astype(np.float64)
        log_probs = logits - logits.max(-1, keepdims=True)
        log_probs -= np.log(np.exp(log_probs).sum(-1, keepdims=True))
        target = windows[:, t + 1]
        real = target > 0
        values.append(-log_probs[np.arange(len(target)), target][real])
    return np.concatenate(values)


def continue_greedy(step, prompts, new_tokens):
    """Greedy continuations (N, new_tokens) of prompts (N, P) through the step: the reference loop."""
    prompts = np.asarray(prompts, np.int32)
    names = [k for k in step.specs if k.startswith("state_")]
    state, _ = decoding.prefill(step, step.zeros(names, len(prompts)), prompts[:, :-1])
    return decoding.greedy(step, state, prompts[:, -1], new_tokens)


def evaluate(engines, data):
    """(metrics, greedy continuations) on a stored test split {"windows", "prompts", "new_tokens"} and,
    in runs that store them, "lanes": the test stream as a few contiguous rows (corpus.lanes).

    perplexity: over the lanes, the state carried from token to token along each one, as an LM reads a
    stream (Mikolov's and Zaremba's evaluation; the n-gram baseline scores the same lanes with its
    n-1 tokens of history); window_perplexity: each window from a zero state, the figure the full
    model's teacher-forced pass must reproduce. Runs without lanes report the windows' figure as both."""
    step = engines[STEP_PART]
    window_nll = negative_log_likelihoods(step, data["windows"])
    nll = negative_log_likelihoods(step, data["lanes"]) if "lanes" in data else window_nll
    continuations = continue_greedy(step, data["prompts"], int(data["new_tokens"]))
    return {METRIC: lm_metrics.perplexity(nll), "window_perplexity": lm_metrics.perplexity(window_nll),
            "tokens_scored": int(nll.size)}, continuations  # fmt: skip


def score(logits, windows):
    """Perplexity of the full model's logits (N, L, V) on windows (N, L+1): the teacher-forced figure
    the step loop must reproduce."""
    logits = np.asarray(logits, np.float64)
    log_probs = logits - logits.max(-1, keepdims=True)
    log_probs -= np.log(np.exp(log_probs).sum(-1, keepdims=True))
    targets = np.asarray(windows)[:, 1:]
    real = targets > 0
    picked = np.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]
    return {METRIC: lm_metrics.perplexity(-picked[real])}


def perplexity_increase(keras_perplexity, perplexity):
    """An export's loss against Keras: percent higher perplexity (lower is better here)."""
    return (perplexity / keras_perplexity - 1) * 100


TASK = registry.register(registry.DecoderTask(
    name="language_model", recipe="generation", metric=METRIC, build=build, compile=compile, score=score,
    litert_formats=LITERT_FORMATS, parts=parts, evaluate=evaluate, part_names=PARTS, step_part=STEP_PART,
    verb="toolkit generate", drop=perplexity_increase,
    description="token ids -> next-token logits (a step part with its recurrent state)",
))  # fmt: skip
