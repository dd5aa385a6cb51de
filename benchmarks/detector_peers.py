"""What the detection benchmark's peers share: other libraries' detectors (KerasHub's RetinaNet,
KerasCV's YOLOv8) on OUR backbone, data, batch size, augmentation and wall-clock budget, scored by
our metric, timed at batch 1, and put through every route to the stock LiteRT interpreter.

A peer module supplies build(args, image_shape, num_classes) -> a detector whose call() returns raw
head outputs and whose decode_predictions(raw, images) runs anchor decoding and NMS (the API both
KerasHub's and KerasCV's detectors have), compile_for(model, total_steps, learning_rate), and
to_peer(dataset) mapping our `detection.batches` to its target format. `run` does the rest.
"""

import os

import keras
import numpy as np

from benchmarks.budget import fit_within
from toolkit.export import litert
from toolkit.metrics import detection as detection_metrics

# The same post-processing settings as our detector (toolkit.tasks.detection.inference_model defaults):
# the peers' own defaults (confidence 0.5 in KerasHub, 0.2 in KerasCV) would cut the low-score tail
# that mAP integrates over.
MAX_DETECTIONS, SCORE_THRESHOLD, IOU_THRESHOLD = 100, 0.05, 0.5
BOX_FORMAT = "xyxy"  # our data's format; both peers convert to their anchors' or grid's internally


def nms(layers, from_logits):
    """The NonMaxSuppression layer of `layers` (keras_hub.layers or keras_cv.layers: the same layer and
    arguments) with our settings. from_logits: whether the peer's class scores arrive as logits."""
    return layers.NonMaxSuppression(
        bounding_box_format=BOX_FORMAT, from_logits=from_logits, iou_threshold=IOU_THRESHOLD,
        confidence_threshold=SCORE_THRESHOLD, max_detections=MAX_DETECTIONS,
    )  # fmt: skip


def training_data(args):
    """The recipe's data and training stream, as recipes/detection.py builds them (same seed, fresh
    scenes every epoch where the recipe composes them), endless: (data, batches)."""
    from toolkit import recipe
    from toolkit.data import detection

    data = detection.load(args.data, data_dir=args.data_dir, image_size=args.image_size,
                          scenes_per_epoch=args.scenes_per_epoch, seed=args.seed,
                          **recipe.split_fractions(args))  # fmt: skip
    augment = detection.augmentation(args.augment, data.image_shape[0], seed=args.seed)
    train = detection.batches(data.train, args.batch_size, args.max_objects, not data.fresh_train, augment, args.seed)
    return data, train.repeat()


def self_check_data(folder, train_size=512, test_size=256):
    """The peers' self-checks' data: small stored scene splits composed into folder/tfds, and the seed
    set to 0 for the model built next."""
    from toolkit.data import detection, scenes

    builder = scenes.builder(
        None, os.path.join(folder, "tfds"), {"train": train_size, "validation": 64, "test": test_size}
    )
    data = detection.from_builder(builder, "scenes (self-check sizes)")
    keras.utils.set_random_seed(0)
    return data


def to_detections(outputs, image_shape=None):
    """A peer's decoded output -> our evaluate() input. Both libraries return {"boxes" (N, K, 4) in the
    detector's box format, "confidence", "num_detections"} and the class as "labels" (KerasHub) or
    "classes" (KerasCV), rows past num_detections set to -1. Neither clips decoded boxes to the image;
    with image_shape we do (as our decoder does), which can only raise the peer's IoUs."""
    boxes = np.asarray(outputs["boxes"], np.float32)
    if image_shape is not None:
        height, width = image_shape[:2]
        boxes = np.clip(boxes, 0, np.array([width, height, width, height], np.float32))
    return {
        "boxes": boxes,
        "scores": np.asarray(outputs["confidence"], np.float32),
        "classes": np.asarray(outputs["labels"] if "labels" in outputs else outputs["classes"], np.int64),
        "num_detections": np.asarray(outputs["num_detections"], np.int64),
    }


def predict_fixed_batch(model, images, batch_size=32):
    """model.predict in chunks of one size (the last padded), on a freshly made predict function.

    Works around KerasHub's NonMaxSuppression needing a static batch size: non_max_suppression() calls
    ops.zeros([boxes.shape[0]]), which raises "Expected int32, but got None" on a None batch. Keras'
    predict_function is a tf.function with reduce_retracing, so a second input shape (a new batch size,
    or a short last batch) is traced with batch None and fails. (predict_on_batch fails on the
    TensorFlow backend for another reason: predict_step gets the 1-tuple (x,) and decode_predictions
    unpacks `images, _ = data`.)"""
    images = np.asarray(images, np.float32)
    batch_size = min(batch_size, len(images))
    model.make_predict_function(force=True)
    outputs = []
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size]
        missing = batch_size - len(batch)
        if missing:
            batch = np.concatenate([batch, np.zeros((missing, *batch.shape[1:]), batch.dtype)])
        found = model.predict(batch, batch_size=batch_size, verbose=0)
        outputs.append({k: np.asarray(v)[: batch_size - missing] for k, v in found.items()})
    return {k: np.concatenate([o[k] for o in outputs]) for k in outputs[0]}


def inference_function(model, batch_size=1):
    """The peer's whole inference path as one tf.function with a static input shape: the forward pass
    plus decode_predictions (anchor decoding and the library's NMS), which is what predict_step runs.
    Outputs are renamed to ours: boxes, scores, classes, num_detections. (KerasHub's preprocessor is
    left out: at 128x128 in and out, with scale and offset None, it is the identity.)"""
    import tensorflow as tf

    spec = tf.TensorSpec((batch_size, *model.input.shape[1:]), tf.float32, name="images")

    @tf.function(input_signature=[spec])
    def detect(images):
        found = model.decode_predictions(model(images, training=False), images)
        return {
            "boxes": found["boxes"],
            "scores": found["confidence"],
            "classes": found["labels"] if "labels" in found else found["classes"],
            "num_detections": found["num_detections"],
        }

    return detect


def score(model, images, ground_truth, num_classes, batch_size=32):
    """COCO mAP of the peer's predict() detections (decoded, NMS'd) with our metric: {"map", "map50", ...}."""
    outputs = predict_fixed_batch(model, images, batch_size)
    return detection_metrics.evaluate(to_detections(outputs, np.shape(images)[1:3]), ground_truth, num_classes)


def keras_latency_ms(model, image):
    """Batch-1 (median, p90) ms of the peer's forward pass + decoding + NMS in a traced tf.function
    (`inference_function`). Ours is timed with predict_on_batch, which is broken for RetinaNet (see
    predict_fixed_batch) and carries a little more Keras overhead, so any bias here favours the peer."""
    detect = inference_function(model, 1)
    return litert.median_latency_ms(detect, np.asarray(image, np.float32)[None])


def _one_line(error):
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text[:400]}"


def _run_tflite(path, image):
    """Loads `path` on the stock ai-edge-litert interpreter, runs one image, times invoke()."""
    runtime = litert.LiteRTModel(path)
    sample = np.asarray(image, np.float32)[None]
    outputs = runtime(sample)
    latency, _ = runtime.latency_ms(sample)
    names = sorted(outputs) if isinstance(outputs, dict) else ["output_0"]
    return outputs, latency, names


def _ops_of(path):
    from ai_edge_litert.interpreter import Interpreter

    return sorted({op["op_name"] for op in Interpreter(model_path=path)._get_ops_details()})


def _attempt(name, folder, image, make_tflite, nms_inside):
    """One export route: make_tflite(folder) -> .tflite path; then the stock interpreter on one image."""
    result = {"route": name, "nms_inside": nms_inside}
    try:
        path = make_tflite(folder)
    except Exception as e:  # noqa: BLE001 - converters raise ConverterError, TypeError, ValueError...
        return dict(result, status="failed", reason=f"export: {_one_line(e)}")
    result["size_mb"] = litert.size_bytes(path) / 1e6
    try:
        result["ops"] = _ops_of(path)
        outputs, latency, names = _run_tflite(path, image)
    except Exception as e:  # noqa: BLE001 - the interpreter raises RuntimeError, ValueError...
        return dict(result, status="failed", reason=f"stock interpreter: {_one_line(e)}", ops=result.get("ops"))
    return dict(result, status="ok", reason=f"ran on the stock interpreter; outputs {', '.join(names)}",
                latency_ms=latency, outputs={k: np.asarray(v) for k, v in outputs.items()} if isinstance(outputs, dict)
                else {"output_0": np.asarray(outputs)})  # fmt: skip


def litert_attempt(model, folder, image=None, prefix="peer"):
    """Tries to put the peer on the stock LiteRT interpreter, four ways, and says what happened.

    1. "full path, toolkit converter": the forward pass + decode_predictions (decoding and the
       library's NMS) traced at batch 1 (`inference_function`), saved as a SavedModel
       (keras.export.ExportArchive), converted by toolkit.export.litert.convert(..., "fp32") - builtin
       ops only, as our exports are.
    2. the same SavedModel converted with Select TF ops allowed (what the converter's error suggests),
       then the stock interpreter, which has no Flex delegate.
    3. "model.call, toolkit path": toolkit.export.litert.export_saved_model (model.export(...,
       "tf_saved_model")) then litert.convert fp32. Both peers' call() returns raw head outputs;
       decoding and NMS live in predict_step, so they are not in it.
    4. "model.export litert": Keras' own model.export(path, format="litert") (Select TF ops allowed by
       default); also model.call only.
    Returns the full-path verdict {"status", "reason", "nms_inside", "latency_ms" (if it ran)} plus
    "routes", one such dict per route (with the op list of each file that was written)."""
    import tensorflow as tf

    os.makedirs(folder, exist_ok=True)
    if image is None:
        image = np.zeros(model.input.shape[1:], np.float32)

    saved_with_nms = os.path.join(folder, f"{prefix}_with_nms_saved_model")

    def full_path(folder):
        archive = keras.export.ExportArchive()
        archive.track(model)
        detect = inference_function(model, 1)
        archive.add_endpoint("serve", detect, input_signature=detect.input_signature)
        archive.write_out(saved_with_nms, verbose=False)
        path = os.path.join(folder, f"{prefix}_with_nms_fp32.tflite")
        with open(path, "wb") as f:
            f.write(litert.convert(saved_with_nms, "fp32"))
        return path

    def full_path_select_ops(folder):  # the same SavedModel, Select TF (Flex) ops allowed
        converter = tf.lite.TFLiteConverter.from_saved_model(saved_with_nms)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS, tf.lite.OpsSet.SELECT_TF_OPS]
        path = os.path.join(folder, f"{prefix}_with_nms_select_tf_ops_fp32.tflite")
        with open(path, "wb") as f:
            f.write(converter.convert())
        return path

    def call_only(folder):
        saved = os.path.join(folder, f"{prefix}_call_saved_model")
        litert.export_saved_model(model, saved)
        path = os.path.join(folder, f"{prefix}_call_fp32.tflite")
        with open(path, "wb") as f:
            f.write(litert.convert(saved, "fp32"))
        return path

    def keras_litert(folder):
        path = os.path.join(folder, f"{prefix}_keras_export.tflite")
        model.export(path, format="litert", verbose=False)
        return path

    routes = [
        _attempt("full path (call + decode + NMS), toolkit converter", folder, image, full_path, True),
        _attempt("full path, Select TF ops allowed", folder, image, full_path_select_ops, True),
        _attempt("model.call, toolkit export_saved_model + convert", folder, image, call_only, False),
        _attempt("model.export(format='litert')", folder, image, keras_litert, False),
    ]
    verdict = {k: v for k, v in routes[0].items() if k in ("status", "reason", "nms_inside", "latency_ms")}
    return dict(verdict, routes=routes)


def run(title, args, budget_seconds, build, compile_for, to_peer, folder):
    """One peer for benchmarks/detection.py: build(args, image_shape, num_classes) on the recipe's
    backbone (and options), data, batch size and augmentation (`training_data`), trained for the same
    wall-clock budget as our detector took. Its schedule is planned for the steps that fit the budget
    (throughput measured on a few warm-up batches, which count against the budget); then scored on
    the whole test split with our metric, timed at batch 1, and tried on the stock LiteRT interpreter.
    Returns a JSON-able dict: map, map50, train_seconds, images_seen, latency_text, best_latency_ms,
    litert (the full path's verdict and every route, without outputs), summary."""
    data, train = training_data(args)
    num_classes = len(data.class_names)
    keras.utils.set_random_seed(args.seed)
    model = build(args, data.image_shape, num_classes)
    seconds, batches = fit_within(budget_seconds, model, lambda steps: compile_for(model, steps, args.learning_rate),
                                  to_peer(train))  # fmt: skip
    images_seen = batches * args.batch_size

    images, ground_truth = data.ground_truth("test")
    metrics = score(model, images, ground_truth, num_classes)
    latency, _ = keras_latency_ms(model, images[0])
    found = litert_attempt(model, os.path.join(folder, "litert"), images[0], prefix=os.path.basename(folder))
    for route in found["routes"]:
        route.pop("outputs", None)
    ran = [r for r in found["routes"] if "latency_ms" in r]
    best = min([latency] + [r["latency_ms"] for r in ran])
    routes = "; ".join(f"{r['route']}: {r['status']} ({r['reason']})" for r in found["routes"])
    latency_text = f"Keras {latency:.1f} ms" + "".join(
        f", LiteRT `{r['route']}` {r['latency_ms']:.1f} ms ({'with' if r['nms_inside'] else 'without'} NMS)"
        for r in ran
    )
    summary = (
        f"{title} on our `{args.backbone}` backbone with the same options, data, batch size and augmentation, "
        f"trained for the same wall-clock budget ({seconds:.0f} s: {images_seen:,} images, "
        f"{images_seen / data.sizes['train']:.1f} epochs at {images_seen / seconds:.0f} images/s; ours did "
        f"{args.epochs} epochs), {model.count_params():,} parameters: test mAP@[.5:.95] {metrics['map']:.4f}, "
        f"mAP@.5 {metrics['map50']:.4f}; batch-1 latency {latency_text}. LiteRT routes: {routes}."
    )
    return {
        "map": float(metrics["map"]),
        "map50": float(metrics["map50"]),
        "params": model.count_params(),
        "train_seconds": seconds,
        "images_seen": images_seen,
        "keras_latency_ms": latency,
        "latency_text": latency_text,
        "best_latency_ms": best,
        "litert": found,
        "summary": summary,
    }

