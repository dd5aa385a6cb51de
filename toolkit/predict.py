"""Predictions from a finished run folder, on the user's own files, with any exported format.

Each single-pass task has one predictor here (`PREDICTORS`, keyed by the registered task name, checked
against `toolkit.tasks` on use): what its inputs are (image files, texts, graph nodes), its default
format and the names of a prediction's fields. A predictor returns rows: (input, *fields) per
prediction, and (input, "wrote PATH") for a file it wrote. `toolkit predict` prints them tab-separated
or, with --json, as one JSON object per input (`records`). Decoders (translation, generation) decode
with `toolkit translate` and `toolkit generate`.
"""

import dataclasses
import glob
import io
import os
import sys

import numpy as np

from toolkit.errors import ToolkitError, choose
from toolkit.runs import MODEL_FILE, Run, tflite_file

FORMAT_FILES = {
    "keras": MODEL_FILE,
    **{fmt: tflite_file(fmt) for fmt in ("tflite_fp32", "tflite_fp16", "tflite_dynamic", "tflite_int8",
                                         "tflite_int8io", "tflite_int16x8")},  # fmt: skip
}
AUTO = "auto"  # toolkit predict's default: the fastest accurate format the run's benchmark measured
ACCURATE_POINTS = 1.0  # what `auto` lets a format lose against Keras on the run's test split


def resolve_format(run_dir, fmt, fallback):
    """`fmt`, or for "auto" the format with the lowest batch-1 latency among those the run's
    benchmark.json (`toolkit benchmark`) passed within ACCURATE_POINTS of Keras and whose file is in
    the run folder; a run never benchmarked gets `fallback` (its recipe's default)."""
    import json

    from toolkit.runs import BENCHMARK_FILE

    if fmt != AUTO:
        return fmt
    path = os.path.join(run_dir, BENCHMARK_FILE)
    if not os.path.isfile(path):
        return fallback
    try:
        with open(path) as f:
            rows = json.load(f)["formats"]
        candidates = [(row["latency_ms"], name) for name, row in rows.items()
                      if name in FORMAT_FILES and row.get("status") == "passed" and "latency_ms" in row
                      and row.get("drop_points", 0.0) <= ACCURATE_POINTS
                      and os.path.isfile(os.path.join(run_dir, FORMAT_FILES[name]))]  # fmt: skip
    except (ValueError, KeyError, TypeError, AttributeError):
        raise ToolkitError(f"{path} is not a toolkit benchmark result: rerun toolkit benchmark {run_dir}") from None
    return min(candidates)[1] if candidates else fallback


def load_run_model(run_dir, fmt, allow_unsafe=False):
    """Returns (callable on a float batch, input shape (H, W, C)); .keras files load in Keras safe_mode."""
    choose("format", fmt, FORMAT_FILES)
    path = Run(run_dir).require(FORMAT_FILES[fmt])
    if fmt == "keras":
        from toolkit import saving

        from toolkit.export.pipeline import keras_outputs

        model = saving.load_model(path, allow_unsafe, compile=False)
        return (lambda x: keras_outputs(model, x)), tuple(model.input_shape[1:])
    from toolkit.export.litert import LiteRTModel

    runtime = LiteRTModel(path)
    shape = runtime.interpreter.get_input_details()[0]["shape"]
    return runtime, tuple(int(d) for d in shape[1:])


def is_model_file(source):
    """A self-describing .tflite file given in place of a run folder (toolkit predict --model)."""
    return str(source).endswith(".tflite") and not os.path.isdir(source)


@dataclasses.dataclass
class Source:
    """What a predictor reads, from a run folder or a bare .tflite file (its packed metadata,
    toolkit.export.metadata): the model (a callable on a batch), its input shape, the class names,
    the 16-bit intensity rule (or the run folder that holds it) and, for text, the vocabulary."""

    model: object
    shape: tuple
    labels: list
    intensity: object
    vocabulary: list = None


def read_model_file(source, recipe):
    """The packed metadata of a bare .tflite file (toolkit.export.metadata.read), refused in one line
    when the file was made for another recipe."""
    from toolkit.export.metadata import read

    found = read(source)
    described = found["description"]
    if described.get("recipe") != recipe:
        raise ToolkitError(f"{source} is a {described.get('recipe')} model ({described.get('task')}), not {recipe}")
    return found


def open_source(source, recipe, fmt, allow_unsafe=False, vocabulary=False):
    """A Source from a run folder (its `fmt` file, labels.txt, vocab.txt) or from a .tflite file that
    carries them; a file made for another recipe, or one without toolkit metadata, is one clear line."""
    if not is_model_file(source):
        labels = Run.of(source, recipe).labels()
        model, shape = load_run_model(source, fmt, allow_unsafe)
        words = None
        if vocabulary:
            from toolkit.data import tokenizer

            words = tokenizer.load_vocabulary(source)
        return Source(model, shape, labels, source, words)
    from toolkit import tasks
    from toolkit.export.litert import LiteRTModel

    found = read_model_file(source, recipe)
    described = found["description"]
    if described.get("part", "model") != "model" or tasks.get(described["task"]).is_decoder:
        raise ToolkitError(f"{source} is a decoder part: decode with toolkit {tasks.get(described['task']).verb}")
    if not found["labels"]:
        raise ToolkitError(f"{source}: its metadata holds no labels.txt, so its outputs cannot be named")
    if vocabulary and not found["vocabulary"]:
        raise ToolkitError(f"{source}: its metadata holds no vocab.txt, so texts cannot be turned into its token ids")
    runtime = LiteRTModel(source)
    shape = tuple(int(d) for d in runtime.interpreter.get_input_details()[0]["shape"][1:])
    return Source(runtime, shape, found["labels"], described.get("intensity"), found["vocabulary"])


def read_image(path, shape, intensity=None):
    """Reads one image file at the model's size and channel count; a bad file is named. 8-bit files
    come back as uint8; TIFF and 16-bit PNG files are read as training reads them (toolkit.data.intensity),
    16-bit ones scaled by the run's rule to float32 0..255. intensity: the run folder (its
    intensity.json is read when there is one) or a rule as that file holds it."""
    return read_image_and_size(path, shape, intensity)[0]


def read_image_and_size(path, shape, intensity=None):
    """read_image's array and the file's own (width, height), from the one check of the file (a TIFF's
    check decodes it: boxes and masks are mapped back to the original size without a second read)."""
    from PIL import Image

    from toolkit.data import intensity as rules
    from toolkit.data.images import check_image_file

    if not os.path.isfile(path):
        raise ToolkitError(f"{path}: no such image file")
    width, height, _ = check_image_file(path)
    size = (width, height)
    if rules.needs_numpy(path):
        image = rules.read(path)
        if rules.bits(image) == 16:
            if intensity is None:
                raise ToolkitError(f"{path}: a 16-bit image needs its run's {rules.INTENSITY_FILE} to be scaled, "
                                   "and no run folder or rule was given")  # fmt: skip
            rule = rules.load(intensity) if isinstance(intensity, (str, os.PathLike)) else intensity
            if rule is None:
                raise ToolkitError(f"{path}: a 16-bit image, but the run has no {rules.INTENSITY_FILE} (its model was "
                                   "trained on 8-bit images): convert the image to 8 bits")  # fmt: skip
            image = rules.apply(rules.check(rule, "the intensity rule"), image)
        return rules.resize(rules.to_channels(image, shape[2]), tuple(shape[:2])), size
    with Image.open(path) as image:
        image = image.convert("L" if shape[2] == 1 else "RGB").resize((shape[1], shape[0]), Image.BILINEAR)
        array = np.asarray(image, np.uint8)
    return (array[..., None] if shape[2] == 1 else array), size


def classification_predictor(run_dir, fmt="tflite_int8", allow_unsafe=False):
    """Loads the run once; the returned function maps image files to rows (file, label, probability)."""
    found = open_source(run_dir, "classification", fmt, allow_unsafe)

    def predict(files):
        batch = np.stack([read_image(f, found.shape, found.intensity) for f in files]).astype(np.float32)
        return [(f, found.labels[int(np.argmax(p))], float(np.max(p))) for f, p in zip(files, found.model(batch))]

    return predict


def predict_classification(run_dir, files, fmt="tflite_int8", allow_unsafe=False):
    return classification_predictor(run_dir, fmt, allow_unsafe)(files)


class SentimentPredictor:
    """Raw text -> (label, probability): the run's own vocabulary and tokenizer, then its model."""

    def __init__(self, run_dir, fmt="tflite_dynamic", allow_unsafe=False):
        from toolkit.data import tokenizer

        found = open_source(run_dir, "sentiment", fmt, allow_unsafe, vocabulary=True)
        self.labels, self.model = found.labels, found.model
        self.tokenizer = tokenizer.make(found.vocabulary, found.shape[0])

    def token_ids(self, texts):
        from toolkit.data.texts import check_text

        texts = [check_text(t, f"text {i + 1}") for i, t in enumerate(texts)]
        return np.asarray(self.tokenizer(texts), np.int32)

    def __call__(self, texts):
        probabilities = np.asarray(self.model(self.token_ids(texts)))
        return [(t, self.labels[int(np.argmax(p))], float(np.max(p))) for t, p in zip(texts, probabilities)]


def predict_sentiment(run_dir, texts, fmt="tflite_dynamic", allow_unsafe=False):
    return SentimentPredictor(run_dir, fmt, allow_unsafe)(texts)


def _detection_rows(path, image, size, outputs, labels, shape, min_score, output_dir):
    """Rows of one image's detections (class, score, box in its own pixels) and the drawing's path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from toolkit.export.report import draw_detections

    width, height = size
    scale = np.array([width / shape[1], height / shape[0]] * 2)
    n = int(outputs["num_detections"][0])
    found = {k: np.asarray(outputs[k][0][:n]) for k in ("boxes", "scores", "classes")}
    keep = found["scores"] >= min_score
    found = {k: v[keep] for k, v in found.items()}
    rows = [(path, labels[int(cls)], float(score), ",".join(f"{v:.1f}" for v in box * scale))
            for box, score, cls in zip(found["boxes"], found["scores"], found["classes"])]  # fmt: skip
    fig, ax = plt.subplots(figsize=(5, 5))
    draw_detections(ax, image, found, labels, min_score=min_score)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return rows + [(path, f"wrote {_write_beside(path, '.detections.png', buffer.getvalue(), output_dir)}")]


def _class_map_rows(path, class_map, size, labels, output_dir):
    """Rows of one image's classes by share of its pixels, largest first, and the palette PNG's path."""
    from PIL import Image

    from toolkit.data.segmentation import voc_palette

    mask = Image.fromarray(np.asarray(class_map).astype(np.uint8), mode="P")
    mask = mask.resize(size, Image.NEAREST)  # class ids: no interpolation
    mask.putpalette(voc_palette().tobytes())
    ids, counts = np.unique(np.asarray(mask), return_counts=True)
    rows = [(path, labels[int(ids[i])], float(counts[i] / counts.sum())) for i in np.argsort(-counts, kind="stable")]
    buffer = io.BytesIO()
    mask.save(buffer, format="PNG")
    return rows + [(path, f"wrote {_write_beside(path, '.segmentation.png', buffer.getvalue(), output_dir)}")]


def detection_predictor(run_dir, fmt="tflite_int8", allow_unsafe=False, min_score=0.3, output_dir=None):
    """Loads the run once; the returned function gives the detections on the user's images, each drawn to
    FILE.detections.png (in output_dir, or beside the image). Rows: (file, class name, score,
    "x1,y1,x2,y2" in the original image's pixels) per detection, then (file, "wrote PATH") for its drawing."""
    found = open_source(run_dir, "detection", fmt, allow_unsafe)
    model, shape = found.model, found.shape

    def predict(files):
        rows = []
        for path in files:
            image, size = read_image_and_size(path, shape, found.intensity)
            rows += _detection_rows(path, image, size, model(image[None].astype(np.float32)), found.labels, shape,
                                    min_score, output_dir)  # fmt: skip
        return rows

    return predict


def segmentation_predictor(run_dir, fmt="tflite_int8", allow_unsafe=False, output_dir=None):
    """Loads the run once; the returned function writes the class map of each of the user's images to
    FILE.segmentation.png (in output_dir, or beside the image) at the image's own size: a palette PNG
    whose indices are the class ids (PASCAL VOC's colours), so it views as a colour mask and reads back
    as an index mask (`--data folder:`). Rows: (file, class name, fraction of the image's pixels) per
    class present, largest first, then (file, "wrote PATH")."""
    found = open_source(run_dir, "segmentation", fmt, allow_unsafe)

    def predict(files):
        rows = []
        for path in files:
            image, size = read_image_and_size(path, found.shape, found.intensity)
            class_map = np.asarray(found.model(image[None].astype(np.float32)))[0]
            rows += _class_map_rows(path, class_map, size, found.labels, output_dir)
        return rows

    return predict


def multitask_predictor(run_dir, fmt="tflite_int8", allow_unsafe=False, min_score=0.3, output_dir=None):
    """Loads the run once; the returned function runs every head of a multi-task run on the user's
    images, from its one file. Rows: (file, head, class name, value, box) with head "detection" (value:
    score, box "x1,y1,x2,y2"), "segmentation" (value: share of the pixels, box "") and
    "classification" (value: probability the class is present, box ""), and (file, "wrote PATH") for
    the drawings the heads it has make."""
    found = open_source(run_dir, "multitask", fmt, allow_unsafe)
    labels, model, shape = found.labels, found.model, found.shape

    def predict(files):
        rows = []
        for path in files:
            image, size = read_image_and_size(path, shape, found.intensity)
            outputs = model(image[None].astype(np.float32))
            outputs = outputs if isinstance(outputs, dict) else {"presence": outputs}
            if "num_detections" in outputs:
                for row in _detection_rows(path, image, size, outputs, labels, shape, min_score, output_dir):
                    rows.append((path, "detection", *row[1:]) if len(row) == 4 else row)
            if "class_map" in outputs:
                for row in _class_map_rows(path, outputs["class_map"][0], size, ["background", *labels], output_dir):
                    rows.append((path, "segmentation", *row[1:], "") if len(row) == 3 else row)
            if "presence" in outputs:
                probabilities = np.asarray(outputs["presence"])[0]
                rows += [(path, "classification", labels[i], float(probabilities[i]), "")
                         for i in np.argsort(-probabilities, kind="stable")]  # fmt: skip
        return rows

    return predict


def predict_detection(run_dir, files, fmt="tflite_int8", allow_unsafe=False, min_score=0.3, output_dir=None):
    return detection_predictor(run_dir, fmt, allow_unsafe, min_score, output_dir)(files)


def predict_segmentation(run_dir, files, fmt="tflite_int8", allow_unsafe=False, output_dir=None):
    return segmentation_predictor(run_dir, fmt, allow_unsafe, output_dir)(files)


def predict_multitask(run_dir, files, fmt="tflite_int8", allow_unsafe=False, min_score=0.3, output_dir=None):
    return multitask_predictor(run_dir, fmt, allow_unsafe, min_score, output_dir)(files)


def node_classification_predictor(run_dir, fmt="tflite_fp32", allow_unsafe=False):
    """Loads the run once; the returned function gives the classes of the run's own graph's nodes (the
    graph it was trained and tested on, as stored in its test_data.npz): `nodes` are node indices
    (0..N-1); none: every node. Rows: (node, class name, probability)."""
    from toolkit.runs import VERIFY_FILE

    if is_model_file(run_dir):
        read_model_file(run_dir, "node_classification")  # another recipe's file: say that first
        raise ToolkitError(f"{run_dir}: node classification predicts its run's own graph (stored in the run's "
                           f"{VERIFY_FILE}): give the run folder, --run")  # fmt: skip
    run = Run.of(run_dir, "node_classification")
    labels = run.labels()
    model, _ = load_run_model(run_dir, fmt, allow_unsafe)
    data = np.load(run.require(VERIFY_FILE))
    inputs = {k[len("input__"):]: data[k].astype(np.float32) for k in data.files if k.startswith("input__")}
    count = inputs["adjacency"].shape[1]
    found = []  # every node's class probabilities: one pass over the graph, made on the first call

    def predict(nodes):
        wanted = []
        for node in nodes or range(count):
            try:
                index = int(node)
            except ValueError:
                index = -1
            if not 0 <= index < count:
                raise ToolkitError(f"node {node!r}: the run's graph has nodes 0..{count - 1}")
            wanted.append(index)
        if not found:
            found.append(np.asarray(model(inputs))[0])
        probabilities = found[0]
        return [(str(i), labels[int(np.argmax(probabilities[i]))], float(np.max(probabilities[i]))) for i in wanted]

    return predict


def predict_node_classification(run_dir, nodes, fmt="tflite_fp32", allow_unsafe=False):
    return node_classification_predictor(run_dir, fmt, allow_unsafe)(nodes)


# ----- the predictors `toolkit predict` dispatches through -----


@dataclasses.dataclass(frozen=True)
class Predictor:
    """load(run_dir, fmt, allow_unsafe=...): reads the run's model and labels once and returns a function
    from a list of inputs to rows. inputs: "images" (files, folders, globs, "-" for paths on stdin),
    "texts" (arguments, --file with one per line, "-" for stdin) or "nodes"; fields: the names of a
    prediction row's values after its input."""

    load: object
    inputs: str
    default_format: str
    fields: tuple
    help: str
    one_per_input: bool = False


PREDICTORS = {
    "classification": Predictor(classification_predictor, "images", "tflite_int8", ("label", "probability"),
                                "image files, folders or globs", one_per_input=True),
    "text_classification": Predictor(SentimentPredictor, "texts", "tflite_dynamic", ("label", "probability"),
                                     "texts (quote each one)", one_per_input=True),
    "node_classification": Predictor(node_classification_predictor, "nodes", "tflite_fp32", ("label", "probability"),
                                     "node indices of the run's graph (none: every node)", one_per_input=True),
    "detection": Predictor(detection_predictor, "images", "tflite_int8", ("label", "score", "box"),
                           "image files, folders or globs (each drawn to FILE.detections.png)"),
    "segmentation": Predictor(segmentation_predictor, "images", "tflite_int8", ("label", "fraction"),
                              "image files, folders or globs (each class map written to FILE.segmentation.png)"),
    "multitask": Predictor(multitask_predictor, "images", "tflite_int8", ("head", "label", "value", "box"),
                           "image files, folders or globs (drawn to FILE.detections.png / FILE.segmentation.png)"),
}  # fmt: skip


def predictor_for(recipe):
    """The registered task of `recipe` and its predictor; a decoder's recipe gets one line naming its verb."""
    from toolkit import tasks

    task = tasks.for_recipe(recipe)
    if task.is_decoder:
        raise ToolkitError(f"{recipe} runs decode text: use `{task.verb}` (toolkit predict serves single-pass tasks)")
    return task, PREDICTORS[task.name]


def expand_inputs(kind, given, text_file=None, stdin=None):
    """The inputs `toolkit predict` was given, expanded: images: a folder gives its image files (sorted), a
    glob its matches, "-" the paths read from stdin; texts: the arguments, the lines of text_file, and "-"
    the lines of stdin. Anything that expands to nothing is one clear line."""
    from toolkit.data.images import image_files

    stdin = stdin or sys.stdin
    found = []
    if kind == "texts" and text_file is not None:
        if not os.path.isfile(text_file):
            raise ToolkitError(f"{text_file}: no such text file")
        with open(text_file, encoding="utf-8", errors="surrogateescape") as f:
            found += [line.rstrip("\n") for line in f if line.strip()]
    for item in given:
        if item == "-":
            found += [line.rstrip("\n") for line in stdin if line.strip()]
        elif kind != "images":
            found.append(item)
        elif os.path.isdir(item):
            found += image_files(item)
        elif glob.has_magic(item):
            files = sorted(f for f in glob.glob(item) if os.path.isfile(f))
            if not files:
                raise ToolkitError(f"{item}: no file matches")
            found += files
        else:
            found.append(item)
    if not found and kind != "nodes":
        raise ToolkitError(f"no {kind} to predict on")
    return found


def records(rows, predictor):
    """Rows -> one JSON-ready object per input, in order: {"input", "predictions": [{field: value}],
    "wrote": [paths]}. A predictor's rows for one input are consecutive; a classifier's are one per input
    (so a text given twice is two inputs)."""
    fields, found = predictor.fields, []
    for row in rows:
        if not found or found[-1]["input"] != row[0] or (predictor.one_per_input and found[-1]["predictions"]):
            found.append({"input": row[0], "predictions": [], "wrote": []})
        if len(row) == 2 and isinstance(row[1], str) and row[1].startswith("wrote "):
            found[-1]["wrote"].append(row[1][len("wrote "):])
        else:
            found[-1]["predictions"].append(dict(zip(fields, row[1:])))
    return found



def _write_beside(path, suffix, data, output_dir=None):
    """Writes `data` (atomically) to <image stem><suffix> in output_dir, or beside the image; returns that path."""
    from toolkit.runs import write_atomic

    stem = os.path.splitext(os.path.basename(path))[0] + suffix
    target = os.path.join(output_dir or os.path.dirname(os.path.abspath(path)), stem)
    write_atomic(target, data)
    return target
