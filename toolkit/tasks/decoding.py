"""What every decoder task shares: step models from trained ones, one engine interface for Keras and
LiteRT, the reference greedy loop, and KerasHub samplers driven through a recurrent state.

A decoder is exported as separate models (an encoder, one decoder step) whose state goes in and out
explicitly; the loop that strings the steps together is plain Python on numpy arrays, so it runs
the Keras models and the LiteRT interpreter alike, and it is the loop a device would run.
"""

import keras
import numpy as np

from toolkit.data.tokenizer import PAD_ID as PAD
from toolkit.errors import ToolkitError, choose


def never_pad(logits):
    """Logits with [PAD] ruled out. [PAD] is no token of text, and the backbones mask it as input:
    fed back, it would make the teacher-forced model skip that position while a step model still
    runs it (how a length-1 masked step behaves differs by backend), so an untrained or weak model
    that picked it would decode differently from its own teacher-forced graph."""
    logits = np.array(logits, np.float32, copy=True)
    logits[..., PAD] = -1e9
    return logits


def at_length(model, length, input_name="tokens"):
    """The same functional model, same weights, rebuilt for token sequences of `length` (a causal
    backbone at length 1 is its own step model: the unrolled recurrence has one step). The clone is
    for inference, so it drops recurrent_dropout: that option only acts in training, and Keras turns a
    GRU/LSTM that has it to its split-gate implementation (three matmuls per step where one does)."""
    config = model.get_config()
    found = False
    for layer in config["layers"]:
        if layer["class_name"] == "InputLayer" and layer["config"]["name"] == input_name:
            layer["config"]["batch_shape"] = [None, length]
            found = True
        if layer["class_name"] in ("GRU", "LSTM") and layer["config"].get("recurrent_dropout"):
            layer["config"]["recurrent_dropout"] = 0.0
    if not found:
        raise ToolkitError(f"{model.name} has no input {input_name!r}")
    clone = keras.Model.from_config(config)
    clone.set_weights(model.get_weights())
    return clone


def state_names(model):
    """The recurrent-state inputs of a step model (state_0, state_0_h...), in order."""
    return [t.name for t in model.inputs if t.name.startswith("state_")]


class Engine:
    """A model part called on a dict of numpy arrays, returning a dict of numpy arrays; `specs` maps
    each input name to (shape without batch, numpy dtype)."""

    def __init__(self, call, specs, name):
        self.call, self.specs, self.name = call, specs, name

    def __call__(self, inputs):
        return self.call({k: np.asarray(v, self.specs[k][1]) for k, v in inputs.items()})

    def zeros(self, names, batch):
        return {k: np.zeros((batch, *self.specs[k][0]), self.specs[k][1]) for k in names}

    def sample(self):
        """Batch-1 inputs for timing (token ids 2, the start token; zero elsewhere): the graphs have no
        data-dependent control flow, so the values do not change the time."""
        return {k: np.full((1, *shape), 2 if np.issubdtype(dtype, np.integer) else 0, dtype)
                for k, (shape, dtype) in self.specs.items()}  # fmt: skip


def keras_engine(model):
    def call(inputs):  # predict_on_batch: compiled once per batch shape (tf.function / jax.jit)
        return {k: np.asarray(v) for k, v in model.predict_on_batch(inputs).items()}

    specs = {t.name: (tuple(t.shape[1:]), np.dtype(t.dtype)) for t in model.inputs}
    return Engine(call, specs, model.name)


def prefill(step, state, tokens, constants=None):
    """Runs `tokens` (B, P) through the step one at a time; returns (state, the last logits)."""
    logits = None
    for t in range(tokens.shape[1]):
        out = step({"tokens": tokens[:, t : t + 1], **state, **(constants or {})})
        state, logits = {k: out[k] for k in state}, out["logits"]
    return state, logits


def greedy(step, state, first_tokens, steps, constants=None, stop_id=None):
    """The reference loop: feed a token, take the argmax (never [PAD]), feed it back; (B, steps) int32
    ids. Once a sequence has produced `stop_id`, it gets [PAD]."""
    tokens = np.asarray(first_tokens, np.int32)
    out = np.zeros((len(tokens), steps), np.int32)
    done = np.zeros(len(tokens), bool)
    for t in range(steps):
        result = step({"tokens": tokens[:, None], **state, **(constants or {})})
        tokens = np.argmax(never_pad(result["logits"]), axis=-1).astype(np.int32)
        if stop_id is not None:
            tokens = np.where(done, PAD, tokens)
            done |= tokens == stop_id
        out[:, t] = tokens
        state = {k: result[k] for k in state}
        if stop_id is not None and done.all():
            break
    return out


SAMPLERS = ("greedy", "top_k", "top_p", "temperature", "beam")


def make_sampler(name, temperature=1.0, k=10, p=0.9, num_beams=4, seed=None):
    """A KerasHub sampler by name ("temperature": sampling from the whole softmax at that temperature)."""
    import keras_hub

    choose("sampler", name, SAMPLERS)
    if not temperature > 0:
        raise ToolkitError(f"temperature must be positive, got {temperature}")
    samplers = keras_hub.samplers
    return {
        "greedy": lambda: samplers.GreedySampler(),
        "top_k": lambda: samplers.TopKSampler(k=k, seed=seed, temperature=temperature),
        "top_p": lambda: samplers.TopPSampler(p=p, seed=seed, temperature=temperature),
        "temperature": lambda: samplers.RandomSampler(seed=seed, temperature=temperature),
        "beam": lambda: samplers.BeamSampler(num_beams=num_beams, temperature=temperature),
    }[name]()


def sample(step, state, prompt, new_tokens, sampler, constants=None, stop_id=None, on_token=None):
    """Extends `prompt` (B, P >= 1 ids) by `new_tokens` with a KerasHub sampler whose `next(prompt,
    cache, index)` runs our step: the cache is the recurrent state (and the constants, e.g. the
    encoder's memory, so that beam search repeats and reorders them with the beams). The prompt
    but its last token is prefilled first. `on_token(ids)` streams each new column as it is made
    (not for beam search, whose beams reorder). [PAD] is never sampled. Runs eagerly (tensorflow or
    torch backend). Returns (B, new_tokens) ids."""
    from keras import ops

    if keras.backend.backend() == "jax":
        raise ToolkitError("sampling drives the step model eagerly: use the tensorflow or torch backend")
    prompt = np.asarray(prompt, np.int32)
    batch, length = prompt.shape
    state, _ = prefill(step, state, prompt[:, :-1], constants)
    full = np.zeros((batch, length + new_tokens), np.int32)
    full[:, :length] = prompt
    mask = np.zeros_like(full, bool)
    mask[:, :length] = True
    cache = {**state, **(constants or {})}
    streamed = [length]
    beam = type(sampler).__name__ == "BeamSampler"

    def next_logits(tokens, cache, index):
        index = int(index)
        if on_token and not beam and index - 1 >= streamed[0]:
            on_token(ops.convert_to_numpy(tokens)[:, index - 1])
            streamed[0] = index
        values = {k: ops.convert_to_numpy(v) for k, v in cache.items()}
        current = ops.convert_to_numpy(tokens)[:, index - 1 : index]
        out = step({"tokens": current, **values})
        values.update({k: out[k] for k in state})
        logits = ops.convert_to_tensor(never_pad(out["logits"]))
        return logits, None, {k: ops.convert_to_tensor(v) for k, v in values.items()}

    result = sampler(
        next_logits,
        ops.convert_to_tensor(full),
        cache={k: ops.convert_to_tensor(v) for k, v in cache.items()},
        index=length,
        mask=ops.convert_to_tensor(mask),
        stop_token_ids=None if stop_id is None else [stop_id],
    )
    generated = ops.convert_to_numpy(result)[:, length:]
    if on_token and not beam:
        for i in range(streamed[0], length + new_tokens):
            on_token(generated[:, i - length])
    elif on_token:
        for i in range(new_tokens):
            on_token(generated[:, i])
    return generated
