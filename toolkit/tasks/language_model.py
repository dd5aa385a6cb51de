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
from toolkit.backbones.text.layers import RecentPointer
from toolkit.backbones.text.rnn import POINTER_STATE_PREFIX
from toolkit.errors import ToolkitError
from toolkit.heads.sequence import zero_states
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
    dropout; training only, so the exported step is unchanged). With the backbone option
    tied_output=True the logits are the backbone's own (its embedding matrix transposed), and
    head_dropout becomes its output_dropout."""
    backbones.require_kind(backbone, "text")
    if backbone_options.get("tied_output"):
        backbone_options = {**backbone_options, "output_dropout": head_dropout}
    feature_model = backbones.get(backbone, (sequence_length,), vocabulary_size=vocabulary_size, **backbone_options)
    state_inputs = [t for t in feature_model.inputs if t.name.startswith("state_")]
    if not state_inputs:
        raise ToolkitError(f"backbone {backbone!r} has no recurrent state; use a causal backbone (causal_rnn)")
    decoder = keras.Model(feature_model.input, feature_model.output, name="decoder")
    decoder.toolkit_spec = feature_model.toolkit_spec  # the same layers: its preset is the backbone's
    tokens = keras.Input((sequence_length,), dtype="int32", name="tokens")
    states = zero_states(state_inputs, tokens)
    out = decoder({"tokens": tokens, **states})
    if "logits" in out:  # tied to the embedding, inside the backbone
        return keras.Model(tokens, keras.layers.Identity(name="logits")(out["logits"]), name="language_model")
    sequence = out["sequence"]
    if head_dropout:
        sequence = keras.layers.Dropout(head_dropout, name="head_dropout")(sequence)
    logits = keras.layers.Dense(vocabulary_size, name="logits")(sequence)
    return keras.Model(tokens, logits, name="language_model")


def trainer(model):
    """The model `fit` trains for a language model: {"tokens" (B, T), "targets" (B, T)} -> the
    log-probability of each target (B, T), sharing every layer and weight with `model` (what training
    it changes, `model` predicts and exports). The loss and its gradients are those of `model`'s
    (B, T, V) outputs at the targets; only the pass is cheaper: a pointer model (`RecentPointer`)
    mixes its two distributions at the targets alone, 13% less time per step for the generation
    recipe's model (benchmarks/RESULTS.md, issue 18); without a pointer the targets are picked from
    a log-softmax of the logits. `compile` returns it compiled; corpus.batches gives its inputs."""
    from toolkit.heads.sequence import zero_states

    tokens = keras.Input(model.input.shape[1:], dtype="int32", name="tokens")
    targets = keras.Input(model.input.shape[1:], dtype="int32", name="targets")
    decoder = _decoder(model)
    pointer = next((layer for layer in decoder.layers if isinstance(layer, RecentPointer)), None) if decoder else None
    if pointer is None:
        picked = TargetLogProbability(name="target_log_probability")([model(tokens), targets])
        return keras.Model({"tokens": tokens, "targets": targets}, picked, name="language_model_trainer")
    # The pointer called once more on the tensors it reads inside the decoder, with the targets: a
    # second graph through the same layers that ends at each target's log-probability.
    inner = keras.Input(model.input.shape[1:], dtype="int32", name="targets")
    picked = pointer([*pointer.input, inner])[0]
    at_targets = keras.Model({**decoder.input, "targets": inner}, picked, name="decoder_at_targets")
    states = zero_states([t for t in decoder.inputs if t.name.startswith("state_")], tokens)
    picked = at_targets({"tokens": tokens, "targets": targets, **states})
    return keras.Model({"tokens": tokens, "targets": targets}, picked, name="language_model_trainer")


def compile(model, learning_rate=3e-3, total_steps=1000, warmup_fraction=0.05):
    """Compiles `model` with translation's optimiser and schedule, and returns `trainer(model)`
    compiled with the same optimiser and `LogProbabilityLoss`: the model to fit (the same loss and
    gradients, less time), while `model`, which it trains, is the one to save and export, its
    optimiser state included. `model` itself gets LogProbabilityLoss where its outputs are
    log-probabilities (a pointer's mixture), Keras' sparse cross-entropy on logits otherwise, so it
    can be fit as it is too."""
    import toolkit.tasks.translation as translation

    translation.compile(model, learning_rate, total_steps, warmup_fraction,
                        LogProbabilityLoss() if outputs_log_probabilities(model) else None)  # fmt: skip
    fitted = trainer(model)
    fitted.compile(optimizer=model.optimizer, loss=LogProbabilityLoss())
    return fitted


def outputs_log_probabilities(model):
    """Whether the model's outputs are log-probabilities: a causal backbone with a pointer
    (`RecentPointer`) mixes two distributions and returns the log of the mixture."""
    return any(isinstance(layer, RecentPointer) for layer in (_decoder(model) or model).layers)


def _decoder(model):
    """The causal backbone nested in a language model (its "decoder" layer), or None."""
    return next((layer for layer in model.layers if layer.name == "decoder"), None)


@keras.saving.register_keras_serializable(package="toolkit")
class TargetLogProbability(keras.layers.Layer):
    """[logits (B, T, V), targets (B, T) int] -> log-softmax of the logits at each target (B, T)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True

    def call(self, inputs):
        from keras import ops

        logits, targets = inputs
        picked = ops.take_along_axis(logits, ops.expand_dims(ops.cast(targets, "int32"), -1), axis=-1)
        return ops.squeeze(picked, -1) - ops.logsumexp(logits, axis=-1)

    def compute_mask(self, inputs, mask=None):
        return None if mask is None else mask[0]

    def compute_output_spec(self, inputs):
        return keras.KerasTensor(inputs[1].shape, dtype=self.compute_dtype)


@keras.saving.register_keras_serializable(package="toolkit")
class LogProbabilityLoss(keras.losses.Loss):
    """Mean negative log-likelihood of integer targets under outputs that are log-probabilities,
    either of every token (B, T, V) or of the targets alone (B, T, `trainer`), padding targets (0)
    left out: Keras' SparseCategoricalCrossentropy(from_logits=True, ignore_class=0) on the same
    outputs, whose log-softmax of an already normalised (B, T, V) tensor changes neither the loss
    nor the parameters' gradients (the probabilities sum to one whatever the weights) but costs more
    passes over it, forward and backward: 9% of the pointer model's training step
    (benchmarks/RESULTS.md, issue 18)."""

    def __init__(self, name="log_probability_loss", **kwargs):
        super().__init__(name=name, **kwargs)

    def call(self, y_true, y_pred):
        from keras import ops
        from keras.src.backend import set_keras_mask  # no public form; keras is pinned to 3.15

        labels = ops.cast(y_true, "int32")
        picked = y_pred  # a trainer's: one figure per target
        if len(y_pred.shape) == len(labels.shape) + 1:
            picked = ops.squeeze(ops.take_along_axis(y_pred, ops.expand_dims(labels, -1), axis=-1), -1)
        real = ops.not_equal(labels, 0)
        losses = ops.where(real, -picked, 0.0)
        # As Keras' ignore_class does: the mask makes the reduction a mean over real targets (and it
        # meets the outputs' own padding mask the same way).
        set_keras_mask(losses, real)
        return losses


def parts(model):
    """{"step": {"tokens": (B, 1), state...} -> {"logits": (B, V), state...}} with the model's weights."""
    decoder = decoding.at_length(model.get_layer("decoder"), 1)
    names = decoding.state_names(decoder)
    inputs = {"tokens": keras.Input((1,), dtype="int32", name="tokens")}
    inputs.update({t.name: keras.Input(tuple(t.shape[1:]), dtype=t.dtype, name=t.name)
                   for t in decoder.inputs if t.name in names})  # fmt: skip
    out = decoder(inputs)
    logits = out["logits"] if "logits" in out else model.get_layer("logits")(out["sequence"])
    outputs = {"logits": keras.ops.squeeze(logits, 1)}
    outputs.update({name: out[name] for name in names})
    return {"step": keras.Model(inputs, outputs, name="step")}


def negative_log_likelihoods(step, windows):
    """NLL (nats) of tokens 1..L of each window (N, L+1) given those before it in the window, by
    running the step over all windows at once from a zero state; padding targets (0) are skipped."""
    windows = np.asarray(windows, np.int32)
    log_p, _ = read_along(step, windows)
    return np.concatenate([-log_p[:, t][windows[:, t + 1] > 0] for t in range(log_p.shape[1])])


def read_along(step, rows, hidden=False):
    """Drives the step along rows (N, L+1) from a zero state: (log-probability of each next token
    (N, L), and with hidden=True the last layer's state after each token (N, L, D), else None)."""
    rows = np.asarray(rows, np.int32)
    names = [k for k in step.specs if k.startswith("state_")]
    # the last layer's h: not an LSTM's c, not a pointer window's keys or tokens
    last = [k for k in names if not k.endswith("_c") and not k.startswith(POINTER_STATE_PREFIX)][-1]
    state = step.zeros(names, len(rows))
    picked, states = [], []
    for t in range(rows.shape[1] - 1):
        out = step({"tokens": rows[:, t : t + 1], **state})
        state = {k: out[k] for k in names}
        logits = out["logits"].astype(np.float64)
        log_probs = logits - logits.max(-1, keepdims=True)
        log_probs -= np.log(np.exp(log_probs).sum(-1, keepdims=True))
        picked.append(log_probs[np.arange(len(rows)), rows[:, t + 1]])
        if hidden:
            states.append(np.asarray(state[last], np.float32).reshape(len(rows), -1))
    return np.stack(picked, 1), (np.stack(states, 1) if hidden else None)


# Neural cache (Grave, Joulin & Usunier 2017): the model's own recent hidden states vote for the tokens
# that followed them, so a name or phrase the test text has just used becomes likely again: what the
# n-gram cannot know and a small recurrent state forgets. Evaluation-time only: no parameters, nothing
# in the exported files; theta and lambda are chosen on the validation lanes.
CACHE_THETAS = (0.05, 0.1, 0.2, 0.3, 0.5)
CACHE_LAMBDAS = (0.05, 0.1, 0.15, 0.2, 0.3)


def cache_probabilities(hidden, targets, window, thetas):
    """hidden (N, L, D): the state after each token of a lane; targets (N, L): the token after each.
    -> (len(thetas), N, L): the cache's probability of targets[:, t], a softmax over theta * h_t . h_i
    for the `window` positions i < t, each voting for targets[:, i]. Position 0 has no cache: NaN."""
    count, length, _ = hidden.shape
    thetas = np.asarray(thetas, np.float64)[:, None, None]
    found = np.full((len(thetas), count, length), np.nan)
    for t in range(1, length):
        start = max(0, t - window)
        dots = np.matmul(hidden[:, start:t], hidden[:, t, :, None])[..., 0].astype(np.float64)[None] * thetas
        weights = np.exp(dots - dots.max(-1, keepdims=True))
        hits = (targets[:, start:t] == targets[:, t : t + 1])[None]
        found[:, :, t] = (weights * hits).sum(-1) / weights.sum(-1)
    return found


def with_cache(log_p, cache_p, weight):
    """log of (1 - weight) * p_model + weight * p_cache (the model alone where the cache is NaN)."""
    mixed = (1 - weight) * np.exp(log_p) + weight * np.nan_to_num(cache_p, nan=0.0)
    return np.where(np.isnan(cache_p), log_p, np.log(mixed))


def choose_cache(log_p, hidden, lanes, window=2000):
    """The cache setting with the lowest perplexity on validation lanes (N, L+1), given read_along's
    log_p and hidden for them: ({"cache_theta", "cache_lambda", "cache_window"}, {(theta, lambda):
    perplexity} for every setting tried)."""
    lanes = np.asarray(lanes, np.int32)
    real = lanes[:, 1:] > 0
    cache_p = cache_probabilities(hidden, lanes[:, 1:], window, CACHE_THETAS)
    tried = {(theta, weight): lm_metrics.perplexity(-with_cache(log_p, cache_p[i], weight)[real])
             for i, theta in enumerate(CACHE_THETAS) for weight in CACHE_LAMBDAS}  # fmt: skip
    theta, weight = min(tried, key=tried.get)
    return {"cache_theta": theta, "cache_lambda": weight, "cache_window": int(window)}, tried


NGRAM_WEIGHTS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)


def interpolated_nll(log_p, other_nll, weight):
    """Per-token NLL of (1 - weight) * the model + weight * another model (its NLLs for the same tokens):
    the cache's mixture with the other model's probabilities in the cache's place."""
    return -with_cache(log_p, np.exp(-np.asarray(other_nll, np.float64)), weight)


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
    metrics = {"window_perplexity": lm_metrics.perplexity(window_nll)}
    if "lanes" in data:
        lanes = np.asarray(data["lanes"], np.int32)
        cached = "cache_theta" in data
        log_p, hidden = read_along(step, lanes, hidden=cached)
        real = lanes[:, 1:] > 0
        nll = -log_p[real]
        if cached:  # the step's own hidden states: every format is scored with its own cache
            window, theta, weight = int(data["cache_window"]), float(data["cache_theta"]), float(data["cache_lambda"])
            cache_p = cache_probabilities(hidden, lanes[:, 1:], window, [theta])[0]
            metrics["cache_perplexity"] = lm_metrics.perplexity(-with_cache(log_p, cache_p, weight)[real])
    else:
        nll = window_nll
    continuations = continue_greedy(step, data["prompts"], int(data["new_tokens"]))
    return {METRIC: lm_metrics.perplexity(nll), **metrics, "tokens_scored": int(nll.size)}, continuations


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
    # The pointer's masked scores (-1e9 where no token is) share one int8 scale with its maximum: the
    # int8 ADD between them needs a rescale above 1, and LiteRT aborts the process preparing it
    # (tflite::QuantizeMultiplierSmallerThanOneExp). Integer step files keep the pointer in float.
    float_layers=("pointer",),
    description="token ids -> next-token logits (a step part with its recurrent state)",
))  # fmt: skip
