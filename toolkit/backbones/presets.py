"""Backbone presets: what a backbone learnt, as a folder in KerasHub's layout, loaded one way.

    PRESET/config.json        which builder and options: {"module", "class_name", "config", "registered_name"}
    PRESET/model.weights.h5   the backbone's weights (Keras' own format: any backend reads what any wrote)
    PRESET/metadata.json      the data it was trained on, input size, normalisation, parameter count,
                              its own scores, the command and versions
    PRESET/assets/vocab.txt   text backbones: the WordPiece vocabulary its embedding rows stand for

File names live here only, as in KerasHub's `preset_utils`. A preset stores the builder's name and
its complete options rather than a serialised functional graph: the registered builder is the one
way a backbone is built, so a preset made at 28x28 on TensorFlow rebuilds at 128x128 on JAX and
takes the same weights (convolutions and embeddings do not depend on the input size).

A KerasHub preset folder (its config.json names a `keras_hub>` class) loads too: the matching
registered builder (`hub_resnet` for `ResNetBackbone`) reads it with KerasHub's own `from_preset`.
"""

import dataclasses
import datetime
import json
import os
import shutil
import tempfile
import warnings

import toolkit.backbones.registry as registry
from toolkit.errors import ToolkitError
from toolkit.runs import replace_folder

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.weights.h5"
METADATA_FILE = "metadata.json"
ASSETS_DIR = "assets"
VOCABULARY_FILE = "vocab.txt"  # under assets/
MODULE = "toolkit.backbones"

# KerasHub backbone classes and the registered builder that reads their preset folders.
HUB_CLASSES = {"ResNetBackbone": "hub_resnet"}

NORMALISATION = {
    "vision": "raw pixels 0..255 in; x / 127.5 - 1 inside the model",
    "text": "int32 WordPiece ids (0 = padding) of assets/vocab.txt",
    "graph": "node features as the run's graph loader gives them",
}


@dataclasses.dataclass(frozen=True)
class Preset:
    """A preset folder as read: the builder `backbone` with `options` (complete), the input shape it
    was trained at, its metadata, and its vocabulary file (text presets) or None."""

    path: str
    backbone: str
    options: dict
    input_shape: tuple
    metadata: dict
    vocabulary: str = None
    keras_hub: bool = False  # a KerasHub preset: the builder loads the weights itself

    @property
    def kind(self):
        return registry.entry(self.backbone).kind


def is_preset(path):
    return os.path.isfile(os.path.join(path, CONFIG_FILE))


def read(path):
    """The preset folder at `path`, checked: a one-line error names the file and what is wrong."""
    if not os.path.isdir(path):
        raise ToolkitError(f"backbone preset {path} is not a folder")
    config_path = os.path.join(path, CONFIG_FILE)
    config = _json(config_path, required=True)
    metadata = _json(os.path.join(path, METADATA_FILE), required=False)
    if not isinstance(config, dict) or not isinstance(config.get("config"), dict):
        raise ToolkitError(f"{config_path} is not a backbone preset config (no \"config\" object)")
    registered = str(config.get("registered_name") or "")
    class_name = config.get("class_name")
    if registered.startswith("keras_hub>") or str(config.get("module", "")).startswith("keras_hub"):
        if class_name not in HUB_CLASSES:
            raise ToolkitError(
                f"{config_path}: KerasHub class {class_name!r} has no toolkit builder; "
                f"supported: {', '.join(sorted(HUB_CLASSES))}"
            )
        shape = config["config"].get("image_shape") or registry.DEFAULT_INPUT_SHAPES["vision"]
        return Preset(os.path.abspath(path), HUB_CLASSES[class_name], {"preset": os.path.abspath(path)},
                      _shape(shape, config_path), metadata, keras_hub=True)  # fmt: skip
    if config.get("module") != MODULE or class_name not in registry.names():
        raise ToolkitError(
            f"{config_path} names backbone {class_name!r} (module {config.get('module')!r}), which this toolkit "
            f"does not have; backbones: {', '.join(registry.names())}"
        )
    options = dict(config["config"])
    input_shape = _shape(options.pop("input_shape", None), config_path)
    options = {k: tuple(v) if isinstance(v, list) else v for k, v in options.items()}  # JSON made tuples lists
    try:
        registry.check_options(class_name, options)
    except ToolkitError as e:
        raise ToolkitError(f"{config_path}: {e}") from None
    weights = os.path.join(path, WEIGHTS_FILE)
    if not os.path.isfile(weights):
        raise ToolkitError(f"backbone preset {path} has no {WEIGHTS_FILE}")
    vocabulary = os.path.join(path, ASSETS_DIR, VOCABULARY_FILE)
    vocabulary = os.path.abspath(vocabulary) if os.path.isfile(vocabulary) else None
    if registry.entry(class_name).kind == "text":
        if vocabulary is None:
            raise ToolkitError(f"text backbone preset {path} has no {ASSETS_DIR}/{VOCABULARY_FILE}: its ids mean nothing")
        with open(vocabulary, encoding="utf-8") as f:
            rows = len(f.read().splitlines())
        if options.get("vocabulary_size", rows) != rows:
            raise ToolkitError(
                f"{vocabulary} holds {rows} WordPieces but {config_path} says vocabulary_size "
                f"{options['vocabulary_size']}: they must be the same"
            )
    return Preset(os.path.abspath(path), class_name, options, input_shape, metadata, vocabulary)


def _json(path, required):
    if not os.path.isfile(path):
        if required:
            raise ToolkitError(f"{os.path.dirname(path) or '.'} is not a backbone preset: it has no {CONFIG_FILE}")
        return {}
    try:
        with open(path) as f:
            return json.load(f)
    except (ValueError, UnicodeDecodeError) as e:
        raise ToolkitError(f"{path} is not valid JSON: {e}") from None


def _shape(shape, where):
    try:
        return tuple(int(d) for d in shape)
    except (TypeError, ValueError):
        raise ToolkitError(f"{where}: input_shape {shape!r} is not a list of sizes") from None


def load_weights(backbone, preset):
    """Loads a preset's weights into `backbone` (built with the preset's builder and options, at any
    input size). A KerasHub preset's builder has loaded them already."""
    preset = preset if isinstance(preset, Preset) else read(preset)
    if preset.keras_hub:
        return backbone
    try:
        with warnings.catch_warnings():  # Keras warns per layer it skips before it raises: one line says it all
            warnings.simplefilter("ignore")
            backbone.load_weights(os.path.join(preset.path, WEIGHTS_FILE))
    except Exception as e:  # shape or layer mismatch: say which preset and which backbone
        raise ToolkitError(
            f"{os.path.join(preset.path, WEIGHTS_FILE)} does not fit backbone {backbone.name!r}: {_first_cause(e)}"
        ) from None
    return backbone


def _first_cause(error):
    """Keras' mismatch message in one line: its count and the first shape that differs, without the values."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    text = " ".join(lines[:2])
    return text.split(" Target variable:")[0].split(", value=")[0]


def from_preset(path, input_shape=None):
    """The preset's backbone with its weights, at `input_shape` (default: the size it was trained at)."""
    preset = read(path)
    shape = tuple(input_shape) if input_shape is not None else preset.input_shape
    return load_weights(registry.get(preset.backbone, shape, **preset.options), preset)


def save(path, backbone, name=None, options=None, metadata=None, vocabulary=None):
    """Writes `backbone` as a preset folder at `path`, whole or not at all (a folder beside it, then
    swapped in as a run folder is; an existing preset is replaced only once the new one is complete).
    See `write`."""
    path = os.path.abspath(path)
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.", dir=parent)
    try:
        write(staging, backbone, name, options, metadata, vocabulary)
        os.chmod(staging, 0o755)  # mkdtemp makes owner-only folders
        replace_folder(staging, path)  # the run folder's own swap
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return path


def write(folder, backbone, name=None, options=None, metadata=None, vocabulary=None):
    """Writes the preset files into `folder` (which the caller makes whole: `save`, or a run folder
    that is swapped in at the end, as `toolkit pretrain` does).

    name/options: the registered builder and its options, for a model that `toolkit.backbones.get`
    did not build (one from get knows both, vocabulary_size included, and they win). metadata: what it
    was trained on, its scores... (versions, parameter count, input shape, normalisation and date are
    added). vocabulary: a vocab.txt file (text backbones)."""
    spec = getattr(backbone, "toolkit_spec", None)
    if spec is not None:
        name, options = spec["name"], spec["options"]
    elif name is None:
        raise ToolkitError(
            f"model {backbone.name!r} was not built by toolkit.backbones.get: pass name= and options= to save it"
        )
    entry = registry.entry(name)
    options = {**registry.options(name), **(options or {})}  # complete: a default that changes keeps old presets right
    input_shape = _input_shape(backbone)
    if entry.kind == "text" and vocabulary is None:
        raise ToolkitError(f"a text backbone preset needs its vocabulary file ({name!r})")
    import keras

    from toolkit.backbones.flops import count_params

    config = {
        "module": MODULE,
        "class_name": name,
        "config": {"input_shape": input_shape, **options},
        "registered_name": f"toolkit>{name}",
    }
    meta = {
        "backbone": name,
        "kind": entry.kind,
        "input_shape": input_shape,
        "normalisation": NORMALISATION[entry.kind],
        "parameter_count": count_params(backbone),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "backend": keras.backend.backend(),
        "keras_version": keras.__version__,
        **(metadata or {}),
    }
    os.makedirs(folder, exist_ok=True)
    backbone.save_weights(os.path.join(folder, WEIGHTS_FILE))
    if vocabulary is not None:
        os.makedirs(os.path.join(folder, ASSETS_DIR), exist_ok=True)
        shutil.copyfile(vocabulary, os.path.join(folder, ASSETS_DIR, VOCABULARY_FILE))
    with open(os.path.join(folder, METADATA_FILE), "w") as f:
        json.dump(meta, f, indent=2, default=_jsonable)
    with open(os.path.join(folder, CONFIG_FILE), "w") as f:  # last: a folder with config.json is a preset
        json.dump(config, f, indent=2, default=_jsonable)
    return folder


def _input_shape(backbone):
    """What `get(name, input_shape)` was given: the image's, the tokens' or the node features' shape
    (a causal backbone also takes its state, a graph one its adjacency)."""
    main = [t for t in backbone.inputs if t.name.split(":")[0] in ("image", "tokens", "features")]
    return [int(d) for d in (main or backbone.inputs)[0].shape[1:]]


def _jsonable(value):
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, (set, tuple)):
        return list(value)
    return str(value)


def find(root):
    """Every preset folder under `root` (itself, and folders up to two levels down: a run's
    `backbone/`), sorted by path."""
    if not os.path.isdir(root):
        raise ToolkitError(f"preset folder {root} does not exist")
    found = []
    for folder, subfolders, _ in os.walk(root):
        depth = os.path.relpath(folder, root).count(os.sep) + (folder != root)
        subfolders[:] = sorted(s for s in subfolders if not s.startswith(".")) if depth < 2 else []
        if is_preset(folder):
            found.append(folder)
    return sorted(found)
