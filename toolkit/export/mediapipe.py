"""MediaPipe Tasks files from finished runs: a classification run as an ImageClassifier model, a
detection run as an ObjectDetector model (`toolkit mediapipe RUN_DIR`).

MediaPipe's vision Tasks take a model whose one input is a 1 x H x W x 3 (RGB) image, float32 with
NormalizationOptions metadata, and (detectors) four float32 outputs found by their metadata names:
"location" (1, N, 4) boxes as ratios of the image, "category" (1, N), "score" (1, N) and
"number of detections" (1,), in one subgraph (mediapipe/tasks/cc/vision/utils/image_tensor_specs.cc,
components/processors/detection_postprocessing_graph.cc). The run's own files differ: grayscale
runs take one channel, boxes are xyxy pixels, classes and counts int32, and NMS runs in a WHILE
subgraph. So the file here wraps the trained model: RGB in (converted to luminance inside for a
grayscale model: 0.299 R + 0.587 G + 0.114 B, which gives back the gray value for a gray image),
NMS unrolled to a fixed number of rounds, outputs in MediaPipe's layout, the run's labels attached
as MediaPipe reads them (TENSOR_AXIS_LABELS on the classifier's scores, TENSOR_VALUE_LABELS on the
detector's categories). It is scored on the run's whole test split like every other format, and
`mediapipe_check` runs it through MediaPipe Tasks itself where mediapipe is installed.
"""

import os

import numpy as np

from toolkit.errors import ToolkitError
from toolkit.export import litert, metadata, pipeline
from toolkit.runs import LABELS_FILE, MEDIAPIPE_RECORD_FILE, VERIFY_FILE, Run, write_atomic

TASKS = ("classification", "detection")
NMS_ROUNDS = 8  # unrolled NMS rounds; exact when NMS settles within them (the loop takes 2-3 on scenes)
LOCATION, CATEGORY, SCORE, COUNT = "location", "category", "score", "number of detections"  # MediaPipe's names
LUMINANCE = (0.299, 0.587, 0.114)  # ITU-R BT.601, what PIL's convert("L") uses


def file_name(quantization):
    return "model_mediapipe.tflite" if quantization == "fp32" else f"model_mediapipe_{quantization}.tflite"


def wrapped_model(model, task, score_threshold=None):
    """The run's Keras model with MediaPipe's I/O: RGB float input; a classifier's probabilities, or
    a detector's location (ratios), category, score and count as float32. score_threshold: the
    detector's in-file threshold instead of the run's (MediaPipe's own option filters above it)."""
    import keras
    from keras import ops

    height, width, channels = model.input_shape[1:]
    image = keras.Input((height, width, 3), name="image")
    x = image
    if channels == 1:
        x = ops.sum(x * ops.convert_to_tensor(np.asarray(LUMINANCE, np.float32)), axis=-1, keepdims=True)
    elif channels != 3:
        raise ToolkitError(f"MediaPipe takes RGB images; this model takes {channels} channels")
    if task == "classification":
        return keras.Model(image, {"probability": model(x)}, name="mediapipe_classifier")
    from toolkit.heads.detection import DetectionDecoder

    decoder = model.get_layer("decoder")
    maps = pipeline.task_of("detection").raw_model(model)  # image -> {"heatmap", "edges"}, the decoder's inputs
    config = {**decoder.get_config(), "nms_rounds": NMS_ROUNDS, "name": "decoder"}
    if score_threshold is not None:
        config["score_threshold"] = float(score_threshold)
    found = DetectionDecoder.from_config(config)(maps(x))
    scale = np.asarray([width, height, width, height], np.float32)
    return keras.Model(image, {
        "location": found["boxes"] / scale,
        "category": ops.cast(found["classes"], "float32"),
        "score": found["scores"],
        "number_of_detections": ops.cast(found["num_detections"], "float32"),
    }, name="mediapipe_detector")  # fmt: skip


def own_outputs(outputs, task, shape):
    """The wrapped model's outputs back in the run's own layout, to score them with the task."""
    if task == "classification":  # one output: LiteRTModel gives the array itself
        return outputs["probability"] if isinstance(outputs, dict) else outputs
    height, width = shape
    return {
        "boxes": np.asarray(outputs["location"]) * np.asarray([width, height, width, height], np.float32),
        "classes": np.asarray(outputs["category"]).astype(np.int32),
        "scores": np.asarray(outputs["score"]),
        "num_detections": np.asarray(outputs["number_of_detections"]).astype(np.int32).reshape(-1),
    }


def tensor_metadata(task, names, shape, labels_file=LABELS_FILE):
    """MediaPipe's TensorMetadata for the outputs `names` (the file's signature names in its
    subgraph order) and the RGB input of `shape` (H, W)."""
    labels = [metadata.associated_file(labels_file, metadata.TENSOR_AXIS_LABELS if task == "classification"
                                       else metadata.TENSOR_VALUE_LABELS, "class names")]  # fmt: skip
    image = metadata.tensor("image", "RGB pixels 0..255", metadata.image_content(3, shape),
                            normalization=([0.0], [1.0]), stats=([0.0], [255.0]))  # fmt: skip
    by_name = {
        "probability": metadata.tensor("probability", "class probabilities", metadata.FEATURES,
                                       stats=([0.0], [1.0]), files=labels),  # fmt: skip
        "location": metadata.tensor(LOCATION, "left, top, right, bottom as ratios of the image",
                                    metadata.box_content((0, 1, 2, 3), metadata.RATIO)),  # fmt: skip
        "category": metadata.tensor(CATEGORY, "class ids", metadata.FEATURES, files=labels),
        "score": metadata.tensor(SCORE, "scores", metadata.FEATURES, stats=([0.0], [1.0])),
        "number_of_detections": metadata.tensor(COUNT, "valid rows", metadata.FEATURES),
    }
    return [image], [by_name[name] for name in names]


def export(run_dir, quantization="fp32", output=None, threads=2, score_threshold=None):
    """Writes the MediaPipe Tasks file of a classification or detection run (output, or
    RUN/model_mediapipe[_int8].tflite); returns (its path, its entry: the task metric on the run's
    whole test split, drop vs Keras, agreement, latency, size). score_threshold: a detector's
    in-file threshold, where it should differ from the run's (agreement with the run's Keras
    outputs then counts detections the run did not keep)."""
    import keras

    if keras.backend.backend() != "tensorflow":
        raise ToolkitError("toolkit mediapipe converts on the TensorFlow backend: KERAS_BACKEND=tensorflow")
    if quantization not in ("fp32", "int8"):
        raise ToolkitError(f"--quantization {quantization!r}: MediaPipe files here are fp32 or int8")
    run = Run.load(run_dir)
    from toolkit import tasks

    module = tasks.for_recipe(run.recipe or "?")
    task = module.name
    if task not in TASKS:
        raise ToolkitError(f"{run_dir} is a {run.report['recipe']} run: MediaPipe files are made for "
                           f"{' and '.join(TASKS)} runs (ImageClassifier, ObjectDetector)")  # fmt: skip
    labels_path = run.require(LABELS_FILE)
    model, inputs, calibration, labels, reference = pipeline.load_test_data(run_dir)
    wrapped = wrapped_model(model, task, score_threshold)
    def rgb(images):  # what MediaPipe feeds: gray images as three equal channels
        images = np.asarray(next(iter(images.values())) if isinstance(images, dict) else images, np.float32)
        return np.repeat(images, 3, axis=-1) if images.shape[-1] == 1 else images

    path = output or os.path.join(run_dir, file_name(quantization))
    saved = os.path.join(run_dir, "saved_model_mediapipe")
    try:
        litert.export_saved_model(wrapped, saved)
        float_layers = module.float_layers  # as the run's own int8 file keeps them
        converted = litert.convert(saved, quantization, rgb(calibration) if quantization == "int8" else None,
                                   float_layers)  # fmt: skip
    finally:
        import shutil

        shutil.rmtree(saved, ignore_errors=True)
    shape = tuple(model.input_shape[1:3])
    inputs_meta, outputs_meta = tensor_metadata(task, metadata.signature_names(converted)[1], shape)
    with open(labels_path, "rb") as f:
        files = {LABELS_FILE: f.read()}
    about = f"{run.report['recipe']} run {os.path.basename(os.path.abspath(run_dir))}, for MediaPipe Tasks"
    flat = metadata.model_metadata(f"{run.report['recipe']} (MediaPipe, {quantization})", about, metadata._version(),
                                   inputs_meta, outputs_meta)  # fmt: skip
    write_atomic(path, metadata.embed(converted, flat, files))
    entry = pipeline._measured(path, lambda count: _OwnLayout(path, task, shape, count), module, {"image": rgb(inputs)}, labels,
                               reference, (threads,))  # fmt: skip
    entry["metric"] = module.metric
    entry["drop_points"] = module.drop(run.report["formats"]["keras"][module.metric], entry[module.metric])
    entry["nms_rounds"] = NMS_ROUNDS if task == "detection" else None
    return path, entry


def record(run_dir, path, entry, check):
    """Adds (or replaces) the file's {"entry", "mediapipe_check"} in the run's mediapipe.json."""
    import json

    where = os.path.join(run_dir, MEDIAPIPE_RECORD_FILE)
    found = {}
    if os.path.isfile(where):
        try:
            with open(where) as f:
                found = json.load(f)
        except ValueError:
            found = {}  # a damaged record is rewritten: it only mirrors what this command measures
    found[os.path.basename(path)] = {"entry": entry, "mediapipe_check": check}
    write_atomic(where, json.dumps(found, indent=1) + "\n")


class _OwnLayout:
    """A MediaPipe file run by LiteRT, its outputs put back in the run's layout (for scoring)."""

    def __init__(self, path, task, shape, threads):
        self.runtime, self.task, self.shape = litert.LiteRTModel(path, threads=threads), task, shape

    def predict(self, inputs):
        return own_outputs(self.runtime.predict(inputs), self.task, self.shape)

    def latency_ms(self, inputs):
        return self.runtime.latency_ms(inputs)


def check_on_test_split(run_dir, path, count=64, min_score=0.3):
    """mediapipe_check on the first `count` images of the run's stored test split (None without mediapipe)."""
    from toolkit import tasks

    data = np.load(os.path.join(run_dir, VERIFY_FILE))
    images = data[next(k for k in data.files if k.startswith("input__"))][:count]
    return mediapipe_check(path, images, tasks.for_recipe(Run.load(run_dir).recipe).name, min_score)


def mediapipe_check(path, images, task, min_score=0.3):
    """Runs the file through MediaPipe Tasks (ImageClassifier / ObjectDetector) on `images` (uint8,
    H x W x 1 or 3) and compares with LiteRT on the same file: {"mediapipe": version, "images": n,
    "top1_agreement"} for a classifier; for a detector the share of images whose detections above
    min_score match (see below), the detections MediaPipe showed and the largest score difference.
    None where mediapipe is not installed."""
    import importlib.util

    if importlib.util.find_spec("mediapipe") is None:
        return None
    import importlib.metadata as md

    import mediapipe as mp
    from mediapipe.tasks.python import BaseOptions, vision

    images = [np.repeat(i, 3, axis=-1) if i.shape[-1] == 1 else i for i in np.asarray(images, np.uint8)]
    runtime = litert.LiteRTModel(path, threads=1)
    ours = [own_outputs(runtime.predict(i[None].astype(np.float32)), task, images[0].shape[:2]) for i in images]
    result = {"mediapipe": md.version("mediapipe"), "images": len(images)}
    if task == "classification":
        options = vision.ImageClassifierOptions(base_options=BaseOptions(model_asset_path=path), max_results=1)
        with vision.ImageClassifier.create_from_options(options) as classifier:
            found = [classifier.classify(mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(i)))
                     for i in images]  # fmt: skip
        top = [f.classifications[0].categories[0] for f in found]
        result["top1_agreement"] = float(np.mean([t.index == int(np.argmax(o[0])) for t, o in zip(top, ours)]))
        result["max_score_diff"] = float(max(abs(t.score - float(np.max(o[0]))) for t, o in zip(top, ours)))
        return result
    # MediaPipe truncates a box's origin and size to whole pixels (so its right and bottom edges
    # move by up to 2 px), merges detections whose boxes then coincide into one
    # (DetectionsDeduplicateCalculator), its top category first, and names categories by the label
    # file only. So an image matches when every MediaPipe detection is one of ours (same class name,
    # score within 1e-4, box within 2 px) and each of ours it does not show shares its box with a
    # higher-scoring one it shows.
    labels = [line.strip() for line in metadata.read_packed(path)[LABELS_FILE].decode("utf-8").splitlines()
              if line.strip()]  # fmt: skip
    options = vision.ObjectDetectorOptions(base_options=BaseOptions(model_asset_path=path), score_threshold=min_score,
                                           max_results=-1)  # fmt: skip
    matched, score_diff, shown_count = [], 0.0, 0
    near = lambda a, b: max(abs(float(x) - float(y)) for x, y in zip(a, b)) <= 2.0  # noqa: E731
    with vision.ObjectDetector.create_from_options(options) as detector:
        for image, out in zip(images, ours):
            found = detector.detect(mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(image)))
            theirs = [(d.categories[0].score, d.categories[0].category_name,
                       (d.bounding_box.origin_x, d.bounding_box.origin_y, d.bounding_box.origin_x + d.bounding_box.width,
                        d.bounding_box.origin_y + d.bounding_box.height)) for d in found.detections]  # fmt: skip
            n = int(out["num_detections"][0])
            mine = [(float(s), labels[int(c)], tuple(b)) for b, c, s in
                    zip(out["boxes"][0][:n], out["classes"][0][:n], out["scores"][0][:n]) if s >= min_score]  # fmt: skip
            shown, ok = set(), True
            for score, name, box in theirs:
                hits = [i for i, (s2, c2, b2) in enumerate(mine) if c2 == name and near(box, b2)
                        and abs(s2 - score) <= 1e-4 and i not in shown]  # fmt: skip
                ok = ok and bool(hits)
                shown.update(hits[:1])
                score_diff = max([score_diff] + [abs(mine[i][0] - score) for i in hits[:1]])
            for i, (s2, _, b2) in enumerate(mine):
                if i not in shown:
                    ok = ok and any(near(b2, mine[j][2]) and mine[j][0] >= s2 for j in shown)
            matched.append(ok)
            shown_count += len(theirs)
    result["detections"] = shown_count
    result["identical_detections"] = float(np.mean(matched))
    result["max_score_diff"] = score_diff
    return result
