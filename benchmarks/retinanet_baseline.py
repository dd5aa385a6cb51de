"""Baseline for the detection benchmark: KerasHub's stock RetinaNet on OUR backbone, data and budget.

    python benchmarks/retinanet_baseline.py        # self-check: 1 epoch on 512 scenes, mAP, latency, LiteRT

What is KerasHub's and what is ours:
- ours: the image encoder (`toolkit.backbones.get(name, image_shape)`: raw pixels 0..255 in, normalisation
  inside, {"P1".."P5"} out), the data, the optimizer schedule (the same AdamW warm-up + cosine as
  `toolkit.tasks.detection.compile`) and the metric (`toolkit.metrics.detection.evaluate`);
- KerasHub's: `RetinaNetBackbone` (its FPN), `RetinaNetObjectDetector` (its heads, focal + Huber losses
  and `compute_loss`), `AnchorGenerator`, `RetinaNetLabelEncoder`, `NonMaxSuppression`, and the
  preprocessor / `RetinaNetImageConverter` (resize only: scale and offset None, our backbone normalises).

Fitting our backbone in: `RetinaNetBackbone` reads only `image_encoder.inputs` and
`image_encoder.pyramid_outputs` (KerasTensors keyed "P2".."P5"), and serializes the encoder with
`keras.layers.serialize`. `ToolkitPyramidEncoder` is therefore a `keras_hub.models.FeaturePyramidBackbone`
subclass (the base KerasHub's own ResNet/MobileNet backbones use) that nests our functional backbone and
sets `pyramid_outputs` to its outputs; its config is (backbone_name, image_shape, backbone_options), so
the whole detector round-trips through get_config / .keras without a preset.

Levels and anchors: objects are 24..64 px (longer side) on 128 px images. KerasHub's default anchors
(anchor_size 4: 2^l * 4 * 2^(s/3)) start at 32 px on P3 and reach 128..203 px on P5, bigger than any
object, and P6/P7 would be 2x2 and 1x1 maps with 256+ px anchors that no object matches. So the
baseline uses P3..P5 (strides 8, 16, 32; P3 is the finest level KerasHub's heads are designed for)
with anchor_size 2: 16/20/25, 32/40/50 and 64/80/101 px at aspect ratios 1:2, 1:1, 2:1, a ladder that
brackets every object size with every level getting positive matches.

Found in keras-hub 0.32 / keras 3.15.1 / TF 2.21 (see litert_attempt and predict_fixed_batch):
- RetinaNet's call() returns raw head outputs; decoding and NMS run only in predict_step, so
  model.export (any format) carries no NMS (also keras-team/keras-cv#2188 for the KerasCV RetinaNet).
- The full path (call + decode_predictions) fails builtin-only conversion on one op, tf.BitwiseAnd:
  NonMaxSuppression's labels = keras.ops.argmax(...) (non_max_supression.py:142), and the TF
  backend's argmax calls signbit(), i.e. tf.bitwise.bitwise_and (keras/src/backend/tensorflow/
  numpy.py:954, 2911; keras-team/keras#20821). With Select TF ops it converts, and the stock
  interpreter refuses FlexBitwiseAnd.
- KerasHub's NMS needs a static batch (ops.zeros([boxes.shape[0]]), non_max_supression.py:241/276),
  and predict_on_batch fails on TF (decode_predictions unpacks `images, _ = data`, line 308).
- KerasHub puts the focal-loss prior bias (-log(99)) on the BOX head (retinanet_object_detector.py:
  133-134), not the classification head as in the RetinaNet paper; kept as is (stock baseline).
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import keras_hub
import numpy as np

from benchmarks.budget import BatchTimes, fit_within
from toolkit import backbones, tasks
from toolkit.export import litert
from toolkit.metrics import detection as detection_metrics

BOX_FORMAT = "xyxy"  # our data's format; KerasHub converts to its anchors' format internally
MIN_LEVEL, MAX_LEVEL, ANCHOR_SIZE = 3, 5, 2.0
# The same post-processing settings as our detector (toolkit.tasks.detection.inference_model defaults).
MAX_DETECTIONS, SCORE_THRESHOLD, IOU_THRESHOLD = 100, 0.05, 0.5


@keras.saving.register_keras_serializable(package="toolkit_benchmarks")
class ToolkitPyramidEncoder(keras_hub.models.FeaturePyramidBackbone):
    """One of our registered vision backbones as a KerasHub FeaturePyramidBackbone (pyramid_outputs P1..P5)."""

    def __init__(self, backbone_name="resnet", image_shape=(128, 128, 1), backbone_options=None, **kwargs):
        backbone_options = dict(backbone_options or {})
        features = backbones.get(backbone_name, image_shape, **backbone_options)
        inputs = keras.Input(tuple(image_shape), name="images")
        pyramid = features(inputs)
        super().__init__(inputs=inputs, outputs=pyramid, **kwargs)
        self.backbone_name = backbone_name
        self.image_shape = tuple(image_shape)
        self.backbone_options = backbone_options
        self.pyramid_outputs = pyramid

    def get_config(self):
        config = super().get_config()
        config.update(
            backbone_name=self.backbone_name, image_shape=self.image_shape, backbone_options=self.backbone_options
        )
        return config


def build_retinanet(backbone_name="resnet", image_shape=(128, 128, 1), num_classes=10, **backbone_options):
    """KerasHub's RetinaNetObjectDetector on our backbone (no preset, nothing downloaded).

    The label encoder is KerasHub's default (RetinaNetLabelEncoder is not in the public keras_hub API in
    0.32; the detector builds it from our anchor generator: IoU >= 0.5 positive, < 0.4 background,
    center_xywh deltas). KerasHub defaults everywhere except: P3..P5 with anchor_size 2 (module
    docstring), xyxy boxes, and the decoder's thresholds set to ours (score 0.05, IoU 0.5, 100 detections) so that mAP is comparable
    (KerasHub's default confidence threshold 0.5 would cut the low-score tail that mAP integrates over).
    """
    image_shape = tuple(image_shape)
    encoder = ToolkitPyramidEncoder(backbone_name, image_shape, backbone_options, name="toolkit_encoder")
    backbone = keras_hub.models.RetinaNetBackbone(
        image_encoder=encoder, min_level=MIN_LEVEL, max_level=MAX_LEVEL, use_p5=False, image_shape=image_shape
    )
    anchor_generator = keras_hub.layers.AnchorGenerator(
        BOX_FORMAT, min_level=MIN_LEVEL, max_level=MAX_LEVEL, num_scales=3, aspect_ratios=[0.5, 1.0, 2.0],
        anchor_size=ANCHOR_SIZE,
    )  # fmt: skip
    converter = keras_hub.layers.RetinaNetImageConverter(
        image_size=image_shape[:2], scale=None, offset=None, bounding_box_format=BOX_FORMAT
    )
    preprocessor = keras_hub.models.RetinaNetObjectDetectorPreprocessor(image_converter=converter)
    decoder = keras_hub.layers.NonMaxSuppression(
        bounding_box_format=BOX_FORMAT, from_logits=True, iou_threshold=IOU_THRESHOLD,
        confidence_threshold=SCORE_THRESHOLD, max_detections=MAX_DETECTIONS,
    )  # fmt: skip
    return keras_hub.models.RetinaNetObjectDetector(
        backbone=backbone, num_classes=num_classes, bounding_box_format=BOX_FORMAT,
        anchor_generator=anchor_generator, preprocessor=preprocessor,
        prediction_decoder=decoder,
    )  # fmt: skip


def retinanet_batches(dataset):
    """Our `detection.batches` output -> RetinaNet's: (images, {"boxes" xyxy pixels, "labels" (-1 = none)})."""
    return dataset.map(lambda images, targets: (images, {"boxes": targets["boxes"], "labels": targets["classes"]}))


def compile_retinanet(model, total_steps, learning_rate=3e-3, weight_decay=1e-4, warmup_fraction=0.05):
    """KerasHub's losses (focal + Huber, normalised by positive anchors in compute_loss) under the same
    AdamW warm-up + cosine schedule as our detector, over total_steps."""
    schedule = tasks.warmup_cosine(learning_rate, total_steps, warmup_fraction)
    model.compile(optimizer=keras.optimizers.AdamW(schedule, weight_decay=weight_decay, global_clipnorm=10.0))


def train(model, train_ds, validation_ds, epochs, learning_rate=3e-3, weight_decay=1e-4, warmup_fraction=0.05,
          callbacks=None, verbose=2):  # fmt: skip
    """Plain model.fit on our batches (mapped to RetinaNet's format), compiled by compile_retinanet.
    Returns (history, seconds of fit)."""
    steps_per_epoch = int(train_ds.cardinality())
    if steps_per_epoch < 1:  # unknown or infinite cardinality: count once
        steps_per_epoch = sum(1 for _ in train_ds)
    compile_retinanet(model, epochs * steps_per_epoch, learning_rate, weight_decay, warmup_fraction)
    validation = retinanet_batches(validation_ds) if validation_ds is not None else None
    start = time.perf_counter()
    history = model.fit(
        retinanet_batches(train_ds), validation_data=validation, epochs=epochs, callbacks=callbacks, verbose=verbose
    )
    return history, time.perf_counter() - start


def to_detections(outputs, image_shape=None):
    """RetinaNet predict() output -> our evaluate() input. KerasHub returns {"boxes" (N, K, 4) in the
    model's bounding_box_format (xyxy pixels here), "confidence", "labels", "num_detections"}, rows past
    num_detections set to -1 (mask_invalid_detections). KerasHub does not clip decoded boxes to the
    image; with image_shape we do (as our decoder does), which can only raise the baseline's IoUs."""
    boxes = np.asarray(outputs["boxes"], np.float32)
    if image_shape is not None:
        height, width = image_shape[:2]
        boxes = np.clip(boxes, 0, np.array([width, height, width, height], np.float32))
    return {
        "boxes": boxes,
        "scores": np.asarray(outputs["confidence"], np.float32),
        "classes": np.asarray(outputs["labels"], np.int64),
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
    """RetinaNet's whole inference path as one tf.function with a static input shape: the forward pass
    plus decode_predictions (anchor decoding and KerasHub's NonMaxSuppression), which is what
    predict_step runs. Outputs are renamed to ours: boxes, scores, classes, num_detections.
    (The preprocessor is left out: at 128x128 in and out, with scale and offset None, it is the identity.)"""
    import tensorflow as tf

    spec = tf.TensorSpec((batch_size, *model.input.shape[1:]), tf.float32, name="images")

    @tf.function(input_signature=[spec])
    def detect(images):
        found = model.decode_predictions(model(images, training=False), images)
        return {
            "boxes": found["boxes"],
            "scores": found["confidence"],
            "classes": found["labels"],
            "num_detections": found["num_detections"],
        }

    return detect


def score(model, images, ground_truth, num_classes, batch_size=32):
    """COCO mAP of RetinaNet's predict() detections (decoded, NMS'd) with our metric: {"map", "map50", ...}."""
    outputs = predict_fixed_batch(model, images, batch_size)
    return detection_metrics.evaluate(to_detections(outputs, np.shape(images)[1:3]), ground_truth, num_classes)


def keras_latency_ms(model, image):
    """Batch-1 (median, p90) ms of RetinaNet's forward pass + decoding + NMS in a traced tf.function
    (`inference_function`). Ours is timed with predict_on_batch, which is broken for RetinaNet (see
    predict_fixed_batch) and carries a little more Keras overhead, so any bias here favours the baseline."""
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


def litert_attempt(model, folder, image=None):
    """Tries to put RetinaNet on the stock LiteRT interpreter, four ways, and says what happened.

    1. "full path, toolkit converter": the forward pass + decode_predictions (anchor decoding and
       KerasHub's NonMaxSuppression) traced at batch 1 (`inference_function`), saved as a SavedModel
       (keras.export.ExportArchive), converted by toolkit.export.litert.convert(..., "fp32") - builtin
       ops only, as our exports are.
    2. the same SavedModel converted with Select TF ops allowed (what the converter's error suggests),
       then the stock interpreter, which has no Flex delegate.
    3. "model.call, toolkit path": toolkit.export.litert.export_saved_model (model.export(...,
       "tf_saved_model")) then litert.convert fp32. RetinaNet's call() returns the raw head outputs
       (bbox_regression deltas, cls_logits); decoding and NMS live in predict_step, so they are not in it.
    4. "model.export litert": Keras' own model.export(path, format="litert") (Select TF ops allowed by
       default); also model.call only.
    Returns the full-path verdict {"status", "reason", "nms_inside", "latency_ms" (if it ran)} plus
    "routes", one such dict per route (with the op list of each file that was written)."""
    import tensorflow as tf

    os.makedirs(folder, exist_ok=True)
    if image is None:
        image = np.zeros(model.input.shape[1:], np.float32)

    saved_with_nms = os.path.join(folder, "retinanet_with_nms_saved_model")

    def full_path(folder):
        archive = keras.export.ExportArchive()
        archive.track(model)
        detect = inference_function(model, 1)
        archive.add_endpoint("serve", detect, input_signature=detect.input_signature)
        archive.write_out(saved_with_nms, verbose=False)
        path = os.path.join(folder, "retinanet_with_nms_fp32.tflite")
        with open(path, "wb") as f:
            f.write(litert.convert(saved_with_nms, "fp32"))
        return path

    def full_path_select_ops(folder):  # the same SavedModel, Select TF (Flex) ops allowed
        converter = tf.lite.TFLiteConverter.from_saved_model(saved_with_nms)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS, tf.lite.OpsSet.SELECT_TF_OPS]
        path = os.path.join(folder, "retinanet_with_nms_select_tf_ops_fp32.tflite")
        with open(path, "wb") as f:
            f.write(converter.convert())
        return path

    def call_only(folder):
        saved = os.path.join(folder, "retinanet_call_saved_model")
        litert.export_saved_model(model, saved)
        path = os.path.join(folder, "retinanet_call_fp32.tflite")
        with open(path, "wb") as f:
            f.write(litert.convert(saved, "fp32"))
        return path

    def keras_litert(folder):
        path = os.path.join(folder, "retinanet_keras_export.tflite")
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


def _self_check(folder, train_size=512, test_size=256, batch_size=32, epochs=1):
    from toolkit.data import detection, scenes

    builder = scenes.builder(
        None, os.path.join(folder, "tfds"), {"train": train_size, "validation": 64, "test": test_size}
    )
    data = detection.from_builder(builder, "scenes (self-check sizes)")
    num_classes = len(data.class_names)
    keras.utils.set_random_seed(0)
    model = build_retinanet("resnet", data.image_shape, num_classes)
    train_ds = detection.batches(data.train, batch_size, 16, shuffle=True, augment="flip")
    validation_ds = detection.batches(data.validation, batch_size, 16)
    timer = BatchTimes()
    _, seconds = train(model, train_ds, validation_ds, epochs, callbacks=[timer])
    steady = batch_size * (len(timer.times) - 1) / sum(timer.times[1:]) if len(timer.times) > 1 else float("nan")

    images, ground_truth = data.ground_truth("test")
    metrics = score(model, images, ground_truth, num_classes)
    latency, p90 = keras_latency_ms(model, images[0])

    path = os.path.join(folder, "retinanet.keras")  # the config round-trips (our encoder is registered)
    model.save(path)
    from toolkit import saving

    reloaded = saving.load_model(path)
    first = {k: np.asarray(v) for k, v in inference_function(model, 1)(images[:1].astype(np.float32)).items()}
    again = {k: np.asarray(v) for k, v in inference_function(reloaded, 1)(images[:1].astype(np.float32)).items()}
    roundtrip = max(float(np.abs(first[k].astype(np.float64) - again[k]).max()) for k in first)

    found = litert_attempt(model, os.path.join(folder, "litert"), images[0])
    rows = [
        ("parameters", f"{model.count_params():,}"),
        (f"training, {epochs} epoch(s) on {data.sizes['train']} scenes", f"{seconds:.1f} s"),
        ("throughput incl. tracing", f"{epochs * data.sizes['train'] / seconds:.1f} images/s"),
        ("throughput, batches 2..n", f"{steady:.1f} images/s"),
        (f"test mAP@[.5:.95] ({len(images)} scenes)", f"{metrics['map']:.4f}"),
        ("test mAP@.5", f"{metrics['map50']:.4f}"),
        ("Keras batch-1 latency (median / p90)", f"{latency:.1f} / {p90:.1f} ms"),
        (".keras round-trip max |diff|", f"{roundtrip:.2e}"),
    ]
    for route in found["routes"]:
        ran = f", {route['latency_ms']:.1f} ms" if "latency_ms" in route else ""
        rows.append((f"LiteRT: {route['route']} (NMS inside: {route['nms_inside']})", f"{route['status']}{ran}"))
    width = max(len(name) for name, _ in rows)
    print("\n| " + "measure".ljust(width) + " | value |\n|" + "-" * (width + 2) + "|-------|")
    for name, value in rows:
        print(f"| {name.ljust(width)} | {value} |")
    for route in found["routes"]:
        print(f"\n{route['route']}: {route['reason']}\n  ops: {', '.join(route.get('ops') or []) or '-'}")
    return found


if __name__ == "__main__":
    _self_check(sys.argv[1] if len(sys.argv) > 1 else "/tmp/retinanet_baseline")


def run(args, budget_seconds, folder="saved_models/retinanet_baseline"):
    """The baseline for benchmarks/detection.py: RetinaNet on the recipe's backbone (and options),
    data, batch size and augmentation, trained for the same wall-clock budget as our detector took.
    Its schedule is planned for the steps that fit the budget (throughput measured on a few warm-up
    batches, which count against the budget); then scored on the whole test split with our metric."""
    from toolkit import recipe
    from toolkit.data import detection

    data = detection.load(args.data, data_dir=args.data_dir, image_size=args.image_size)
    num_classes = len(data.class_names)
    options = recipe.backbone_options(args.backbone_option, args.backbone)
    keras.utils.set_random_seed(args.seed)
    model = build_retinanet(args.backbone, data.image_shape, num_classes, **options)
    augment = detection.augmentation(args.augment, data.image_shape[0], seed=args.seed)
    train_ds = detection.batches(data.train, args.batch_size, args.max_objects, True, augment, args.seed).repeat()

    seconds, batches = fit_within(budget_seconds, model, lambda steps: compile_retinanet(model, steps, args.learning_rate),
                                  retinanet_batches(train_ds))  # fmt: skip
    images_seen = batches * args.batch_size

    images, ground_truth = data.ground_truth("test")
    metrics = score(model, images, ground_truth, num_classes)
    latency, p90 = keras_latency_ms(model, images[0])
    found = litert_attempt(model, os.path.join(folder, "litert"), images[0])
    ran = [r for r in found["routes"] if "latency_ms" in r]
    best = min([latency] + [r["latency_ms"] for r in ran])
    routes = "; ".join(f"{r['route']}: {r['status']} ({r['reason']})" for r in found["routes"])
    latency_text = f"Keras {latency:.1f} ms" + "".join(
        f", LiteRT `{r['route']}` {r['latency_ms']:.1f} ms ({'with' if r['nms_inside'] else 'without'} NMS)"
        for r in ran
    )
    summary = (
        f"Baseline in the same run: KerasHub `RetinaNetObjectDetector` (its FPN P3-P5, anchors, focal + Huber "
        f"losses and NMS) on our `{args.backbone}` backbone with the same options, data, batch size and "
        f"augmentation, trained for the same wall-clock budget ({seconds:.0f} s: {images_seen:,} images, "
        f"{images_seen / data.sizes['train']:.1f} epochs at {images_seen / seconds:.0f} images/s; ours did "
        f"{args.epochs} epochs), {model.count_params():,} parameters: test mAP@[.5:.95] {metrics['map']:.4f}, "
        f"mAP@.5 {metrics['map50']:.4f}; batch-1 latency {latency_text}. LiteRT routes: {routes}."
    )
    return {
        "map": metrics["map"],
        "map50": metrics["map50"],
        "train_seconds": seconds,
        "images_seen": images_seen,
        "latency_text": latency_text,
        "best_latency_ms": best,
        "litert": found,
        "summary": summary,
    }
