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

Found in keras-hub 0.32 / keras 3.15.1 / TF 2.21 (see detector_peers.litert_attempt and predict_fixed_batch):
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

from benchmarks.budget import BatchTimes
from benchmarks.detector_peers import (
    BOX_FORMAT,
    inference_function,
    keras_latency_ms,
    litert_attempt,
    nms,
    score,
)
from toolkit import backbones, tasks

MIN_LEVEL, MAX_LEVEL, ANCHOR_SIZE = 3, 5, 2.0


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
    decoder = nms(keras_hub.layers, from_logits=True)
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


def _self_check(folder, train_size=512, test_size=256, batch_size=32, epochs=1):
    from benchmarks.detector_peers import self_check_data
    from toolkit.data import detection

    data = self_check_data(folder, train_size, test_size)
    num_classes = len(data.class_names)
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


def run(args, budget_seconds, folder="saved_models/retinanet_baseline"):
    """The RetinaNet peer for benchmarks/detection.py (`detector_peers.run`: same backbone, data and budget)."""
    from benchmarks import detector_peers

    def build(args, image_shape, num_classes):
        from toolkit import recipe

        return build_retinanet(args.backbone, image_shape, num_classes, **recipe.backbone_config(args))

    title = ("Baseline in the same run: KerasHub `RetinaNetObjectDetector` (its FPN P3-P5, anchors, focal + Huber "
             "losses and NMS)")  # fmt: skip
    return detector_peers.run(title, args, budget_seconds, build, compile_retinanet, retinanet_batches, folder)


if __name__ == "__main__":
    _self_check(sys.argv[1] if len(sys.argv) > 1 else "/tmp/retinanet_baseline")
