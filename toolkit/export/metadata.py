"""Self-describing .tflite files: TFLite Metadata inside, labels and vocabulary packed onto the file.

Every LiteRT file the toolkit writes carries what an app needs to use it without the run folder:
- a `TFLITE_METADATA` buffer (the flatbuffer of TFLite's metadata_schema.fbs, file identifier M001):
  per input, image properties (RGB or grayscale) with NormalizationOptions (mean 0, std 1: the model
  takes raw 0..255 pixels and normalises inside) or the vocabulary of its token ids; per output, what
  it holds, with the label file attached (TENSOR_AXIS_LABELS for class probabilities,
  TENSOR_VALUE_LABELS for class ids, BoundingBoxProperties for boxes);
- the associated files themselves (labels.txt, vocab.txt, target_vocab.txt) and `toolkit.json` (the
  task, recipe, format, input kind, 16-bit intensity rule and versions), in a zip appended to the
  flatbuffer. That is TFLite Metadata's own packing (what tflite-support's MetadataPopulator and
  MediaPipe's metadata writers do): the interpreter ignores the trailing bytes, MediaPipe Tasks and
  Android's metadata extractor read the files from the zip, and `read` reads them back here.

Why our own writer: tflite-support (the library that wrote these) cannot be installed beside
TensorFlow 2.21 (protobuf), and the schema's generated Python ships only inside mediapipe (43 MB plus
OpenCV), which the toolkit does not need at run time. The few tables written here follow
metadata_schema.fbs field by field (slot numbers in `_write`); the tests parse the result with
MediaPipe's generated reader and load the files with MediaPipe Tasks. The model flatbuffer itself is
edited with TensorFlow's own flatbuffer_utils.
"""

import io
import json
import os
import zipfile

import numpy as np

from toolkit.errors import ToolkitError

METADATA_NAME = "TFLITE_METADATA"  # the model metadata entry TFLite's readers look for
DESCRIPTION_FILE = "toolkit.json"  # inside the packed zip: what `read` and `toolkit predict --model` use
MIN_PARSER_VERSION = "1.0.0"  # the oldest metadata parser that reads every field written here
FORMAT_VERSION = 1

# metadata_schema.fbs enums
DESCRIPTIONS, TENSOR_AXIS_LABELS, TENSOR_VALUE_LABELS, VOCABULARY = 1, 2, 3, 5
RGB, GRAYSCALE = 1, 2
FEATURE, IMAGE, BOUNDING_BOX = 1, 2, 3  # ContentProperties union types
NORMALIZATION = 1  # ProcessUnitOptions union type
BOUNDARIES = 1
RATIO, PIXEL = 0, 1


# ----- a minimal flatbuffer writer for metadata_schema.fbs -----
# A table is [(slot, kind, value)]; kinds: str, table, tables, floats, uints, byte (int8/uint8 enum),
# uint. Slot numbers are the fields' declaration order in metadata_schema.fbs (a union takes two: its
# type, then its value).


def _write(builder, fields):
    offsets = {}
    for slot, kind, value in fields:
        if value is None:
            continue
        if kind == "str":
            offsets[slot] = builder.CreateString(value)
        elif kind == "table":
            offsets[slot] = _write(builder, value)
        elif kind == "tables":
            children = [_write(builder, v) for v in value]
            builder.StartVector(4, len(children), 4)
            for child in reversed(children):
                builder.PrependUOffsetTRelative(child)
            offsets[slot] = builder.EndVector()
        elif kind == "floats":
            offsets[slot] = builder.CreateNumpyVector(np.asarray(value, np.float32))
        elif kind == "uints":
            offsets[slot] = builder.CreateNumpyVector(np.asarray(value, np.uint32))
    builder.StartObject(1 + max((slot for slot, _, _ in fields), default=-1))
    for slot, kind, value in fields:
        if value is None:
            continue
        if slot in offsets:
            builder.PrependUOffsetTRelativeSlot(slot, offsets[slot], 0)
        elif kind == "byte":
            builder.PrependUint8Slot(slot, value, None)  # None: written even when it equals the default
        elif kind == "uint":
            builder.PrependUint32Slot(slot, value, None)
        else:
            raise ValueError(f"unknown field kind {kind}")
    return builder.EndObject()


def associated_file(name, kind, description=None):
    return [(0, "str", name), (1, "str", description), (2, "byte", kind)]


def tensor(name, description=None, content=None, normalization=None, stats=None, files=None):
    """A TensorMetadata table. content: (union type, its table); normalization: (mean, std);
    stats: (min, max) per channel."""
    fields = [(0, "str", name), (1, "str", description)]
    if content is not None:
        fields.append((3, "table", [(0, "byte", content[0]), (1, "table", content[1])]))
    if normalization is not None:
        mean, std = normalization
        fields.append((4, "tables", [[(0, "byte", NORMALIZATION), (1, "table", [(0, "floats", mean), (1, "floats", std)])]]))
    if stats is not None:
        fields.append((5, "table", [(0, "floats", stats[1]), (1, "floats", stats[0])]))  # Stats: max, then min
    if files:
        fields.append((6, "tables", files))
    return fields


def image_content(channels, size=None):
    fields = [(0, "byte", RGB if channels == 3 else GRAYSCALE)]
    if size is not None:
        fields.append((1, "table", [(0, "uint", int(size[1])), (1, "uint", int(size[0]))]))  # ImageSize: width, height
    return IMAGE, fields


def box_content(index=(0, 1, 2, 3), coordinates=PIXEL):
    """BOUNDARIES boxes; index: where left, top, right, bottom sit in a box's 4 values."""
    return BOUNDING_BOX, [(0, "uints", list(index)), (1, "byte", BOUNDARIES), (2, "byte", coordinates)]


FEATURES = (FEATURE, [])  # FeatureProperties: an empty table


def model_metadata(name, description, version, inputs, outputs, files=(), author="Backbone Toolkit"):
    """The ModelMetadata flatbuffer (bytes, identifier M001) of a one-subgraph model; inputs / outputs:
    TensorMetadata tables in the subgraph's tensor order."""
    import flatbuffers

    subgraph = [(0, "str", name), (2, "tables", list(inputs)), (3, "tables", list(outputs))]
    root = [(0, "str", name), (1, "str", description), (2, "str", version), (3, "tables", [subgraph]),
            (4, "str", author), (6, "tables", list(files) or None), (7, "str", MIN_PARSER_VERSION)]  # fmt: skip
    builder = flatbuffers.Builder(1024)
    builder.Finish(_write(builder, root), file_identifier=b"M001")
    return bytes(builder.Output())


# ----- the model file -----


def signature_names(tflite):
    """(input names, output names) of the model's one signature, in the subgraph's tensor order
    (the order TensorMetadata lists must follow)."""
    model = _model_object(tflite)
    return _names(model)


def _model_object(tflite):
    from toolkit.export.litert import flatbuffer_object

    return flatbuffer_object(_flatbuffer_part(tflite))


def _names(model):
    graph = model.subgraphs[0]
    if not model.signatureDefs:
        return ([f"input_{i}" for i in range(len(graph.inputs))], [f"output_{i}" for i in range(len(graph.outputs))])
    signature = model.signatureDefs[0]
    by_tensor_in = {m.tensorIndex: m.name.decode() for m in signature.inputs}
    by_tensor_out = {m.tensorIndex: m.name.decode() for m in signature.outputs}
    return [by_tensor_in[i] for i in graph.inputs], [by_tensor_out[i] for i in graph.outputs]


def _flatbuffer_part(tflite):
    """The flatbuffer of a file that may already carry a packed zip (re-embedding replaces it)."""
    data = bytes(tflite)
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as packed:
            start = min(info.header_offset for info in packed.infolist()) if packed.infolist() else len(data)
        return data[:start]
    except zipfile.BadZipFile:
        return data


def embed(tflite, metadata, files):
    """tflite bytes + a ModelMetadata flatbuffer + {name: bytes} -> the self-describing file's bytes.
    A TFLITE_METADATA entry already there is replaced, as is a zip already packed onto the file."""
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    model = _model_object(tflite)
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(metadata, np.uint8)
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name, entry.buffer = METADATA_NAME, len(model.buffers) - 1
    model.metadata = [m for m in (model.metadata or []) if m.name.decode() != METADATA_NAME] + [entry]
    packed = io.BytesIO(flatbuffer_utils.convert_object_to_bytearray(model))
    packed.seek(0, os.SEEK_END)
    # Appending to a non-zip makes zipfile write absolute offsets, as TFLite's MetadataPopulator does.
    with zipfile.ZipFile(packed, "a", zipfile.ZIP_STORED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return packed.getvalue()


def read_packed(path_or_bytes):
    """{name: bytes} of the files packed onto a model file or its bytes ({} when none are)."""
    source = io.BytesIO(path_or_bytes) if isinstance(path_or_bytes, (bytes, bytearray)) else path_or_bytes
    try:
        with zipfile.ZipFile(source) as archive:
            return {name: archive.read(name) for name in archive.namelist()}
    except zipfile.BadZipFile:
        return {}


def read(path):
    """What a self-describing file carries: {"description": toolkit.json's object, "labels": [...] or
    None, "vocabulary": [...] or None, "target_vocabulary": [...] or None, "files": {name: bytes}}.
    A file without it (written by another tool, or before the toolkit packed it) is one clear line."""
    if not os.path.isfile(path):
        raise ToolkitError(f"{path}: no such model file")
    files = read_packed(path)
    if DESCRIPTION_FILE not in files:
        raise ToolkitError(f"{path} carries no toolkit metadata (labels, task): it was not written by this toolkit's "
                           "export, or by an older one; give the run folder (--run) instead, or re-export it with "
                           "toolkit benchmark RUN_DIR")  # fmt: skip
    try:
        description = json.loads(files[DESCRIPTION_FILE].decode("utf-8"))
        if not isinstance(description, dict) or description.get("toolkit_metadata") != FORMAT_VERSION:
            raise ValueError(f"toolkit_metadata {description.get('toolkit_metadata')!r}, expected {FORMAT_VERSION}")
        missing = [k for k in ("task", "recipe", "format") if not isinstance(description.get(k), str)]
        if missing:
            raise ValueError(f"no {', '.join(missing)}")
    except (ValueError, AttributeError) as e:
        raise ToolkitError(f"{path}: its {DESCRIPTION_FILE} is not toolkit metadata ({e})") from None

    def lines(name):
        if name not in files:
            return None
        return files[name].decode("utf-8").splitlines()

    from toolkit.runs import LABELS_FILE, TARGET_VOCABULARY_FILE, VOCABULARY_FILE

    labels = lines(LABELS_FILE)
    return {
        "description": description,
        "labels": [line.strip() for line in labels if line.strip()] if labels is not None else None,
        "vocabulary": lines(VOCABULARY_FILE),
        "target_vocabulary": lines(TARGET_VOCABULARY_FILE),
        "files": files,
    }


def metadata_buffer(path_or_bytes):
    """The TFLITE_METADATA flatbuffer inside a file, or None: for readers (tests parse it with
    MediaPipe's generated schema)."""
    data = path_or_bytes
    if isinstance(path_or_bytes, (str, os.PathLike)):
        with open(path_or_bytes, "rb") as f:
            data = f.read()
    model = _model_object(data)
    for entry in model.metadata or []:
        if entry.name.decode() == METADATA_NAME:
            return bytes(np.asarray(model.buffers[entry.buffer].data, np.uint8))
    return None


# ----- what a run's file says about itself -----

TASK_INPUTS = {"classification": "images", "detection": "images", "segmentation": "images", "multitask": "images",
               "text_classification": "texts", "node_classification": "nodes", "translation": "texts",
               "language_model": "texts"}  # fmt: skip


def describe_run_file(tflite, run_dir, module, fmt, versions, part="model"):
    """`tflite` (bytes) of a run's format `fmt` (or a decoder's `part`) with its metadata embedded:
    the labels, vocabularies and intensity rule found in run_dir, and per-tensor metadata from the task;
    versions: the packages that made it (pipeline.versions())."""
    from toolkit.data import intensity as rules
    from toolkit.runs import LABELS_FILE, TARGET_VOCABULARY_FILE, VOCABULARY_FILE

    files = {}
    for name in (LABELS_FILE, VOCABULARY_FILE, TARGET_VOCABULARY_FILE):
        path = os.path.join(run_dir, name)
        if os.path.isfile(path):
            with open(path, "rb") as f:
                files[name] = f.read()
    description = {
        "toolkit_metadata": FORMAT_VERSION,
        "task": module.name,
        "recipe": module.recipe,
        "format": fmt,
        "part": part,
        "inputs": TASK_INPUTS.get(module.name, "tensors"),
        "pixels": "raw 0..255 (normalisation is inside the model)" if TASK_INPUTS.get(module.name) == "images" else None,
        "intensity": rules.load(run_dir),
        "versions": versions,
    }
    files[DESCRIPTION_FILE] = (json.dumps(description, indent=1) + "\n").encode()
    model = _model_object(tflite)
    input_names, output_names = _names(model)
    graph = model.subgraphs[0]
    shapes = [list(graph.tensors[i].shape) for i in graph.inputs]
    labels = LABELS_FILE in files
    inputs = [_input_tensor(name, shape, module.name, VOCABULARY_FILE in files)
              for name, shape in zip(input_names, shapes)]  # fmt: skip
    outputs = [_output_tensor(name, module.name, labels, len(output_names)) for name in output_names]
    about = [associated_file(DESCRIPTION_FILE, DESCRIPTIONS, "the toolkit's description of this file (JSON)")]
    metadata = model_metadata(f"{module.recipe} ({fmt}{'' if part == 'model' else ', ' + part})",
                              module.description or module.name, _version(), inputs, outputs, about)  # fmt: skip
    return embed(tflite, metadata, files)


def _version():
    import importlib.metadata as md

    try:
        return md.version("backbone-toolkit")
    except md.PackageNotFoundError:
        return "0"


def _input_tensor(name, shape, task, has_vocabulary):
    from toolkit.runs import VOCABULARY_FILE

    if TASK_INPUTS.get(task) == "images" and len(shape) == 4:
        channels = int(shape[-1])
        return tensor(name, "raw pixels 0..255", image_content(channels, shape[1:3]),
                      normalization=([0.0], [1.0]), stats=([0.0], [255.0]))  # fmt: skip
    if has_vocabulary and TASK_INPUTS.get(task) == "texts":
        return tensor(name, "WordPiece token ids (the tokenizer's PAD/START/END are ids 0..)", FEATURES,
                      files=[associated_file(VOCABULARY_FILE, VOCABULARY, "WordPiece vocabulary, one a line")])  # fmt: skip
    return tensor(name, None, FEATURES)


def _output_tensor(name, task, labels, count):
    from toolkit.runs import LABELS_FILE

    if name == "boxes":
        return tensor(name, "x1, y1, x2, y2 in the input's pixels", box_content())
    if labels and name == "classes":
        return tensor(name, "class ids (labels.txt line)", FEATURES,
                      files=[associated_file(LABELS_FILE, TENSOR_VALUE_LABELS, "class names")])  # fmt: skip
    if labels and task == "segmentation" and name == "class_map":
        return tensor(name, "class id per pixel (labels.txt line)", FEATURES,
                      files=[associated_file(LABELS_FILE, TENSOR_VALUE_LABELS, "class names")])  # fmt: skip
    if labels and (name == "presence" or (count == 1 and task in ("classification", "text_classification",
                                                                   "node_classification"))):  # fmt: skip
        return tensor(name, "class probabilities", FEATURES, stats=([0.0], [1.0]),
                      files=[associated_file(LABELS_FILE, TENSOR_AXIS_LABELS, "class names")])  # fmt: skip
    return tensor(name, None, FEATURES)
