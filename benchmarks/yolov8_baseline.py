"""Peer for the detection benchmark: KerasCV's YOLOV8Detector on OUR backbone, data and budget.

    python benchmarks/yolov8_baseline.py [FOLDER]   # self-check: 1 epoch on 512 scenes, mAP, latency, LiteRT

keras-cv is frozen (0.9.0, 2024; its models moved to keras-hub, which has no YOLOv8), but it still
imports and trains under Keras 3.15 with the TensorFlow backend. It is a benchmark-only dependency,
installed with --no-deps (`make .venv/.installed`): its requirement keras-core is the Keras 3 preview,
which keras-cv does not import when Keras 3 is installed; its other requirements are already ours.

What is KerasCV's and what is ours:
- ours: the image encoder (`toolkit.backbones.get`: raw pixels 0..255 in, normalisation inside, P3..P5
  used), the data and augmentation (`detector_peers.training_data`, as the recipe builds them), the
  optimizer schedule (AdamW warm-up + cosine, as `toolkit.tasks.detection.compile`) and the metric;
- KerasCV's: the YOLOv8 path-aggregation FPN and decoupled anchor-free head, its task-aligned label
  encoder, CIoU + binary cross-entropy losses (weights 7.5 / 0.5, its defaults), the distribution-focal
  box decoding, and its NonMaxSuppression (tf.image.non_max_suppression_padded on TensorFlow),
  with our post-processing thresholds (score 0.05, IoU 0.5, 100 detections: KerasCV's default
  confidence 0.2 and IoU 0.7 would cut the low-score tail that mAP integrates over).

Fitting our backbone in: YOLOV8Detector takes any functional model whose `pyramid_level_inputs`
names the layers that give P3, P4 and P5 (it builds a feature extractor with get_layer(name).output),
so `yolo_backbone` wraps our backbone and names its P3..P5 outputs with Identity layers.
fpn_depth 1 is YOLOv8-n's (KerasCV's default 2 is YOLOv8-s's); the budget buys more images with it.

Padding rows: our batches mark an absent object with class -1 and a zero box; KerasCV masks ground
truth by boxes > -1, so `yolov8_batches` sets those boxes to -1.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras

from benchmarks.detector_peers import BOX_FORMAT, nms
from toolkit import backbones, tasks

LEVELS = ("P3", "P4", "P5")
FPN_DEPTH = 1


def keras_cv():
    """The keras_cv module, or a clear error naming how to install it."""
    try:
        import keras_cv as module
    except ImportError as e:
        raise SystemExit(
            f"benchmarks/yolov8_baseline.py needs keras-cv ({e}): pip install --no-deps keras-cv==0.9.0 "
            "(or `make .venv/.installed`), or run benchmarks/detection.py with --skip-baseline"
        ) from e
    return module


def yolo_backbone(backbone_name="resnet", image_shape=(128, 128, 1), **backbone_options):
    """Our registered backbone as the functional model YOLOV8Detector expects: outputs P3..P5 under
    layers of those names, and `pyramid_level_inputs` naming them."""
    features = backbones.get(backbone_name, tuple(image_shape), **backbone_options)
    inputs = keras.Input(tuple(image_shape), name="images")
    pyramid = features(inputs)
    outputs = {level: keras.layers.Identity(name=level)(pyramid[level]) for level in LEVELS}
    model = keras.Model(inputs, outputs, name="toolkit_backbone")
    model.pyramid_level_inputs = {level: level for level in LEVELS}
    return model


def build_yolov8(backbone_name="resnet", image_shape=(128, 128, 1), num_classes=10, fpn_depth=FPN_DEPTH,
                 **backbone_options):  # fmt: skip
    """KerasCV's YOLOV8Detector on our backbone (nothing downloaded), with our NMS thresholds."""
    kcv = keras_cv()
    return kcv.models.YOLOV8Detector(
        num_classes=num_classes, bounding_box_format=BOX_FORMAT, fpn_depth=fpn_depth,
        backbone=yolo_backbone(backbone_name, image_shape, **backbone_options),
        prediction_decoder=nms(kcv.layers, from_logits=False),
    )  # fmt: skip


def yolov8_batches(dataset):
    """Our `detection.batches` output -> YOLOv8's: (images, {"boxes" xyxy pixels, -1 where no object,
    "classes" float, -1 where no object})."""
    import tensorflow as tf

    def convert(images, targets):
        present = targets["classes"] >= 0
        boxes = tf.where(present[..., None], targets["boxes"], -tf.ones_like(targets["boxes"]))
        return images, {"boxes": boxes, "classes": tf.cast(targets["classes"], tf.float32)}

    return dataset.map(convert)


def compile_yolov8(model, total_steps, learning_rate=3e-3, weight_decay=1e-4, warmup_fraction=0.05):
    """KerasCV's losses (CIoU and binary cross-entropy over its task-aligned targets) under the same
    AdamW warm-up + cosine schedule as our detector, over total_steps."""
    schedule = tasks.warmup_cosine(learning_rate, total_steps, warmup_fraction)
    model.compile(optimizer=keras.optimizers.AdamW(schedule, weight_decay=weight_decay, global_clipnorm=10.0),
                  box_loss="ciou", classification_loss="binary_crossentropy")  # fmt: skip


def run(args, budget_seconds, folder="saved_models/yolov8_baseline"):
    """The YOLOv8 peer for benchmarks/detection.py (`detector_peers.run`: same backbone, data and budget)."""
    from benchmarks import detector_peers
    from toolkit import recipe

    def build(args, image_shape, num_classes):
        return build_yolov8(args.backbone, image_shape, num_classes, **recipe.backbone_config(args))

    title = (f"Peer in the same run: KerasCV `YOLOV8Detector` ({keras_cv().__version__}; its path-aggregation "
             f"FPN at depth {FPN_DEPTH}, decoupled anchor-free head, task-aligned assigner, CIoU + BCE losses "
             "and NMS)")  # fmt: skip
    return detector_peers.run(title, args, budget_seconds, build, compile_yolov8, yolov8_batches, folder)


def _self_check(folder, train_size=512, test_size=256, batch_size=32, epochs=1):
    """A small end-to-end pass: builds on our resnet, trains `epochs` on train_size stored scenes, scores
    the test scenes, times batch 1 and tries every LiteRT route."""
    import time

    from benchmarks.detector_peers import keras_latency_ms, litert_attempt, score, self_check_data
    from toolkit.data import detection

    data = self_check_data(folder, train_size, test_size)
    num_classes = len(data.class_names)
    model = build_yolov8("resnet", data.image_shape, num_classes)
    train = yolov8_batches(detection.batches(data.train, batch_size, 16, shuffle=True, augment="flip"))
    compile_yolov8(model, epochs * -(-train_size // batch_size))
    start = time.perf_counter()
    history = model.fit(train, epochs=epochs, verbose=2).history["loss"]
    seconds = time.perf_counter() - start
    images, ground_truth = data.ground_truth("test")
    metrics = score(model, images, ground_truth, num_classes)
    latency, p90 = keras_latency_ms(model, images[0])
    found = litert_attempt(model, os.path.join(folder, "litert"), images[0], prefix="yolov8")
    print(f"parameters {model.count_params():,}; {epochs} epoch(s) on {train_size} scenes in {seconds:.1f} s, "
          f"loss {history}; test mAP {metrics['map']:.4f}, mAP@.5 {metrics['map50']:.4f}; "
          f"Keras batch-1 {latency:.1f} / {p90:.1f} ms")  # fmt: skip
    for route in found["routes"]:
        ran = f", {route['latency_ms']:.1f} ms" if "latency_ms" in route else ""
        print(f"\n{route['route']} (NMS inside: {route['nms_inside']}): {route['status']}{ran}: {route['reason']}"
              f"\n  ops: {', '.join(route.get('ops') or []) or '-'}")  # fmt: skip
    return metrics, found


if __name__ == "__main__":
    _self_check(sys.argv[1] if len(sys.argv) > 1 else "/tmp/yolov8_baseline")
