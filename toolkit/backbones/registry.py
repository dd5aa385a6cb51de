"""One registry maps a backbone name to its builder; `get` is the only way recipes build one."""

import dataclasses
import inspect
import math

import keras

from toolkit.errors import ToolkitError, choose

PYRAMID_LEVELS = ("P1", "P2", "P3", "P4", "P5")


@dataclasses.dataclass(frozen=True)
class BackboneEntry:
    name: str
    builder: object
    kind: str  # "vision", "text" or "graph"
    provider: str  # "toolkit", "keras.applications", "keras_hub"
    description: str
    min_size: int = 32


_REGISTRY = {}


def register(name, *, kind, provider, description, min_size=32):
    """Decorator: registers `builder(input_shape=..., **options) -> keras.Model` under `name`."""

    def decorate(builder):
        if name in _REGISTRY:
            raise ValueError(f"backbone {name!r} is registered twice")
        _REGISTRY[name] = BackboneEntry(name, builder, kind, provider, description, min_size)
        return builder

    return decorate


def names(kind=None):
    return sorted(n for n, e in _REGISTRY.items() if kind is None or e.kind == kind)


def entry(name):
    choose("backbone", name, _REGISTRY)
    return _REGISTRY[name]


def options(name):
    """The keyword options a backbone's builder takes (besides input_shape)."""
    params = inspect.signature(entry(name).builder).parameters
    return {k: p.default for k, p in params.items() if k != "input_shape"}


def require_kind(name, kind):
    """Refuses a backbone of another kind (a vision backbone for a text task...), naming the right ones."""
    if entry(name).kind != kind:
        raise ToolkitError(f"backbone {name!r} is not a {kind} backbone; {kind} backbones: {', '.join(names(kind))}")


def check_options(name, given):
    """Refuses unknown backbone names and options before any data is loaded or model built."""
    unknown = set(given) - set(options(name))
    if unknown:
        raise ToolkitError(
            f"backbone {name!r} has no option {', '.join(sorted(unknown))}; "
            f"its options: {', '.join(sorted(options(name))) or 'none'}"
        )


DEFAULT_INPUT_SHAPES = {"vision": (224, 224, 3), "text": (64,), "graph": (34, 8)}


def get(name, input_shape=None, **kwargs):
    """Builds backbone `name` as a functional keras.Model.

    Vision: raw pixels (0..255), input_shape (H, W, C) -> {"P1".."P5"}.
    Text: int32 token ids (0 = padding), input_shape (T,) -> {"sequence": (B, T, D), "pooled": (B, D)}.
    Graph: {"features": (B, N, F), "adjacency": (B, N, N)}, input_shape (N, F) -> {"sequence", "pooled"}.
    """
    spec = entry(name)
    if input_shape is None:
        input_shape = DEFAULT_INPUT_SHAPES[spec.kind]
    if spec.kind == "text":
        input_shape = _check_sequence_shape(name, input_shape)
    elif spec.kind == "graph":
        input_shape = _check_graph_shape(name, input_shape)
    else:
        input_shape = _check_input_shape(name, input_shape, spec.min_size)
    check_options(name, kwargs)
    model = spec.builder(input_shape=input_shape, **kwargs)
    # what `presets.save` writes to config.json: the builder and the options it was given
    model.toolkit_spec = {"name": name, "options": dict(kwargs)}
    if spec.kind in ("text", "graph"):
        check_text_outputs(model, input_shape)
    else:
        check_pyramid(model, input_shape)
    return model


def _check_input_shape(name, input_shape, min_size):
    try:
        shape = tuple(int(d) for d in input_shape)
    except (TypeError, ValueError):
        raise ToolkitError(f"input_shape must be (height, width, channels), got {input_shape!r}")
    if len(shape) != 3 or shape[2] < 1:
        raise ToolkitError(f"input_shape must be (height, width, channels), got {input_shape!r}")
    if min(shape[:2]) < min_size:
        raise ToolkitError(
            f"backbone {name!r} needs images of at least {min_size}x{min_size}, got {shape[0]}x{shape[1]}"
        )
    return shape


def _check_sequence_shape(name, input_shape):
    try:
        shape = tuple(int(d) for d in input_shape)
    except (TypeError, ValueError):
        shape = ()
    if len(shape) != 1 or shape[0] < 1:
        raise ToolkitError(f"text backbone {name!r} takes input_shape (sequence_length,), got {input_shape!r}")
    return shape


def _check_graph_shape(name, input_shape):
    try:
        shape = tuple(int(d) for d in input_shape)
    except (TypeError, ValueError):
        shape = ()
    if len(shape) != 2 or min(shape) < 1:
        raise ToolkitError(f"graph backbone {name!r} takes input_shape (nodes, features), got {input_shape!r}")
    return shape


def check_text_outputs(model, input_shape):
    """Asserts the text (and graph) contract: "sequence" (B, T, D) and "pooled" (B, D), plus any state outputs."""
    outputs = model.output
    if not isinstance(outputs, dict) or not {"sequence", "pooled"} <= set(outputs):
        raise AssertionError(f"text backbone {model.name} must output sequence and pooled, got {outputs!r}")
    sequence, pooled = outputs["sequence"].shape, outputs["pooled"].shape
    if len(sequence) != 3 or sequence[1] != input_shape[0] or len(pooled) != 2:
        raise AssertionError(f"{model.name}: sequence {sequence} / pooled {pooled} break the text contract")


def level_size(size, level):
    """Spatial size at pyramid level n (stride 2^n) for 'same'-padded stride-2 steps."""
    for _ in range(level):
        size = math.ceil(size / 2)
    return size


def check_pyramid(model, input_shape):
    """Asserts the DESIGN contract: outputs are exactly P1..P5, level n at stride 2^n."""
    outputs = model.output
    if not isinstance(outputs, dict) or tuple(sorted(outputs)) != PYRAMID_LEVELS:
        raise AssertionError(f"backbone {model.name} must output {PYRAMID_LEVELS}, got {outputs!r}")
    for level in PYRAMID_LEVELS:
        n = int(level[1])
        expected = (level_size(input_shape[0], n), level_size(input_shape[1], n))
        got = tuple(outputs[level].shape[1:3])
        if got != expected:
            raise AssertionError(f"{model.name} {level} is {got}, expected {expected} (stride {2**n})")


def normalize(inputs):
    """Raw pixels 0..255 -> [-1, 1], inside the model, so every export takes raw pixels."""
    return keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name="normalize")(inputs)


def pyramid_from_model(model, input_shape, known=None):
    """Picks P1..P5 from any functional model: for each stride, the last layer at that resolution.

    This is timm's `features_only` idea for models we did not write; `known` maps levels that the
    provider already names (KerasHub's `pyramid_outputs`) to their tensors and wins over the search.
    """
    pyramid = dict(known or {})
    for level in PYRAMID_LEVELS:
        if level in pyramid:
            continue
        n = int(level[1])
        target = (level_size(input_shape[0], n), level_size(input_shape[1], n))
        found = None
        for layer in _all_layers(model):
            out = getattr(layer, "output", None)
            if out is None or isinstance(out, (list, tuple, dict)) or len(out.shape) != 4:
                continue
            if tuple(out.shape[1:3]) == target and out.shape[3] is not None and out.shape[3] > 1:
                found = out
        if found is None:
            raise ToolkitError(f"{model.name}: no layer at stride {2**n} for input {input_shape}")
        pyramid[level] = found
    return pyramid


def _all_layers(model):
    for layer in model.layers:
        if isinstance(layer, keras.Model) and not hasattr(layer, "pyramid_outputs"):
            yield from _all_layers(layer)
        else:
            yield layer
