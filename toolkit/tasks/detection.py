"""Object detection: any registered vision backbone -> FPN neck -> anchor-free head (heads/detection.py).

Two models share every weight:
- the training model, image -> {"heatmap", "edges"} (raw maps), trained with plain `model.fit` on
  targets that `encode_targets` computes inside the tf.data pipeline;
- the inference model, the same graph plus `DetectionDecoder` (box decoding and NMS in keras.ops),
  image -> {"boxes", "scores", "classes", "num_detections"}: what is saved, exported and scored.

Headline metric: COCO mAP@[.5:.95] ("map"), with mAP@.5 and per-class AP beside it. Ground truth
travels as one padded array per split, (N, M, 5) rows of x1, y1, x2, y2, class (class -1 = empty).
"""

import keras
import numpy as np
from keras import ops

from toolkit import backbones
from toolkit.errors import ToolkitError
from toolkit.heads.detection import DetectionDecoder, detection_head
from toolkit.necks import fpn
import toolkit.tasks.registry as registry

METRIC = "map"
LITERT_FORMATS = ("tflite_fp32", "tflite_int8")
# int8 files keep box decoding + NMS and the edge-distance output (a 1x1 conv) in float: box edges
# need sub-pixel steps that one int8 scale over 0..100+ px cannot give. Measured on the default run:
# all-int8 outputs lost 5 pt of mAP@[.5:.95] (mAP@.5 unchanged); with these float it is -0.06 pt
# for +0.06 ms. The network itself stays int8.
FLOAT_LAYERS = ("decoder", "detection_edges_conv", "detection_edges_softplus", "edges")
LEVEL = "P2"  # the FPN level the head reads
STRIDE = 2 ** int(LEVEL[1:])
GAUSSIAN_ALPHA = 0.54  # heatmap Gaussian: sigma = alpha * side / 6 (TTFNet)
REGRESSION_BETA = 0.54  # cells within beta * side of the centre regress the box edges (TTFNet)


def build(backbone="resnet", input_shape=(128, 128, 1), num_classes=10, neck_channels=64, head_channels=64,
          head_depth=2, **backbone_options):  # fmt: skip
    """The training model: image -> backbone (a nested model) -> FPN -> {"heatmap", "edges"}."""
    if num_classes < 1:
        raise ToolkitError(f"detection needs at least 1 class, got {num_classes}")
    backbones.require_kind(backbone, "vision")
    height, width = input_shape[:2]
    if height % 32 or width % 32:
        raise ToolkitError(f"detection needs an image size divisible by 32 (the P5 stride), got {height}x{width}")
    feature_model = backbones.get(backbone, input_shape, **backbone_options)
    inputs = keras.Input(input_shape, name="image")
    pyramid = fpn(feature_model(inputs), channels=neck_channels)
    maps = detection_head(pyramid[LEVEL], num_classes, head_channels, head_depth)
    return keras.Model(inputs, maps, name="detector")


def stride_of(model):
    return model.input.shape[1] // model.output["heatmap"].shape[1]


def inference_model(model, max_detections=100, score_threshold=0.05, iou_threshold=0.5):
    """The training model plus decoding and NMS: image -> fixed-size padded detections."""
    decoder = DetectionDecoder(
        stride_of(model), model.input.shape[1:3], max_detections, max(max_detections, 100), score_threshold,
        iou_threshold, name="decoder",
    )  # fmt: skip
    return keras.Model(model.input, decoder(model.output), name="detector_with_nms")


def raw_model(model):
    """The exported inference model up to its decoder: image -> {"heatmap", "edges"}, the maps whose
    order cannot change, for the tight fp32 parity check beside the matched-detection one."""
    maps = {name: model.get_layer(name).output for name in ("heatmap", "edges")}
    return keras.Model(model.input, maps, name="detector_maps")


# ----- targets (tf ops: they run inside the tf.data pipeline, whatever the Keras backend) -----


def target_encoder(image_shape, num_classes):
    """For tf.data: (images, {"boxes", "classes", ...}) batches -> (images, the training model's targets)."""

    def encode(images, targets):
        return images, encode_targets(targets["boxes"], targets["classes"], image_shape, num_classes)

    return encode


def encode_targets(boxes, classes, image_shape, num_classes, stride=STRIDE):
    """Padded ground truth -> the training model's targets, for a batch.

    boxes (B, M, 4) xyxy pixels, classes (B, M) with -1 for empty rows ->
    {"heatmap": (B, h, w, C) Gaussian peaks (exactly 1 at each object's centre cell),
     "edges": (B, h, w, 5): distances from each cell centre to the box's four edges, and the cell's
     regression weight (Gaussian mass of the object the cell belongs to, 0 elsewhere)}.
    """
    import tensorflow as tf

    h, w = image_shape[0] // stride, image_shape[1] // stride
    boxes = tf.cast(boxes, tf.float32)
    valid = classes >= 0
    x1, y1, x2, y2 = (boxes[..., i] for i in range(4))
    bw, bh = tf.maximum(x2 - x1, 1.0), tf.maximum(y2 - y1, 1.0)
    # Centre cell and grid offsets of every cell from it, in cells: (B, M, h, w)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    col = tf.clip_by_value(tf.floor(cx / stride), 0, w - 1)
    row = tf.clip_by_value(tf.floor(cy / stride), 0, h - 1)
    xs = tf.range(w, dtype=tf.float32)[None, None, None, :]
    ys = tf.range(h, dtype=tf.float32)[None, None, :, None]
    dx, dy = xs - col[..., None, None], ys - row[..., None, None]

    def gaussian(scale):
        sx = tf.maximum(scale * bw / 6 / stride, 0.3)[..., None, None]
        sy = tf.maximum(scale * bh / 6 / stride, 0.3)[..., None, None]
        return tf.exp(-(dx**2) / (2 * sx**2) - dy**2 / (2 * sy**2))

    peaks = gaussian(GAUSSIAN_ALPHA) * tf.cast(valid, tf.float32)[..., None, None]  # (B, M, h, w)
    one_hot = tf.one_hot(tf.maximum(classes, 0), num_classes) * tf.cast(valid, tf.float32)[..., None]  # (B, M, C)
    heatmap = tf.reduce_max(peaks[..., None] * one_hot[:, :, None, None, :], axis=1)  # (B, h, w, C)

    # Regression cells: inside the beta-scaled box around the centre (always the centre cell itself).
    px, py = (xs + 0.5) * stride, (ys + 0.5) * stride
    near_x = tf.abs(px - cx[..., None, None]) <= tf.maximum(REGRESSION_BETA * bw / 2, stride / 2)[..., None, None]
    near_y = tf.abs(py - cy[..., None, None]) <= tf.maximum(REGRESSION_BETA * bh / 2, stride / 2)[..., None, None]
    centre = tf.logical_and(tf.equal(dx, 0.0), tf.equal(dy, 0.0))
    region = tf.logical_and(tf.logical_or(tf.logical_and(near_x, near_y), centre), valid[..., None, None])
    mass = gaussian(REGRESSION_BETA) * tf.cast(region, tf.float32)  # (B, M, h, w)
    # Where objects' regions overlap, the smaller object owns the cell (a big one has cells to spare).
    area = bw * bh
    priority = tf.where(region, (1.0 / area)[..., None, None], -1.0)
    owner = tf.argmax(priority, axis=1, output_type=tf.int32)  # (B, h, w)
    owned = tf.one_hot(owner, tf.shape(boxes)[1], axis=1) * tf.cast(region, tf.float32)  # (B, M, h, w)
    # Per-object weight: its Gaussian normalised to sum 1 over its cells, times log(area) (TTFNet).
    weight = owned * mass / tf.maximum(tf.reduce_sum(owned * mass, axis=[2, 3], keepdims=True), 1e-6)
    weight = weight * tf.math.log(tf.maximum(area, 2.0))[..., None, None]
    grid = tf.zeros_like(mass)  # (B, M, h, w): broadcasts the column and row offsets to full maps
    edges_per_object = tf.stack(
        [
            grid + px - x1[..., None, None],
            grid + py - y1[..., None, None],
            grid + x2[..., None, None] - px,
            grid + y2[..., None, None] - py,
        ],
        axis=-1,
    )  # (B, M, h, w, 4)
    edges = tf.reduce_sum(edges_per_object * owned[..., None], axis=1)
    return {
        "heatmap": heatmap,
        "edges": tf.concat([tf.maximum(edges, 0.0), tf.reduce_sum(weight, axis=1)[..., None]], axis=-1),
    }


# ----- losses -----


@keras.saving.register_keras_serializable(package="toolkit")
class HeatmapFocalLoss(keras.losses.Loss):
    """CenterNet's penalty-reduced focal loss, summed over cells and divided by the number of
    objects in the batch (one exact 1 per object), so the loss scale does not depend on crowding."""

    def __init__(self, alpha=2.0, beta=4.0, name="heatmap_focal", **kwargs):
        super().__init__(name=name, **kwargs)
        self.alpha, self.beta = alpha, beta

    def call(self, y_true, y_pred):
        y_pred = ops.clip(y_pred, 1e-6, 1 - 1e-6)
        positive = ops.cast(ops.greater_equal(y_true, 1.0 - 1e-4), y_pred.dtype)
        pos = -ops.log(y_pred) * (1 - y_pred) ** self.alpha * positive
        neg = -ops.log(1 - y_pred) * y_pred**self.alpha * (1 - y_true) ** self.beta * (1 - positive)
        per_image = ops.sum(pos + neg, axis=[1, 2, 3])
        batch = ops.cast(ops.shape(y_true)[0], y_pred.dtype)
        return per_image * batch / ops.maximum(ops.sum(positive), 1.0)  # the batch mean = sum / objects

    def get_config(self):
        return {**super().get_config(), "alpha": self.alpha, "beta": self.beta}


@keras.saving.register_keras_serializable(package="toolkit")
class EdgesGIoULoss(keras.losses.Loss):
    """GIoU loss between predicted and true edge distances at each regression cell (both boxes share
    the cell centre, so no absolute coordinates are needed), weighted by the target's 5th channel
    and normalised by the batch's total weight."""

    def call(self, y_true, y_pred):
        target, weight = y_true[..., :4], y_true[..., 4]
        pl, pt, pr, pb = (y_pred[..., i] for i in range(4))
        tl, tt, tr, tb = (target[..., i] for i in range(4))
        pred_area, true_area = (pl + pr) * (pt + pb), (tl + tr) * (tt + tb)
        inter = (ops.minimum(pl, tl) + ops.minimum(pr, tr)) * (ops.minimum(pt, tt) + ops.minimum(pb, tb))
        union = pred_area + true_area - inter
        enclosing = (ops.maximum(pl, tl) + ops.maximum(pr, tr)) * (ops.maximum(pt, tt) + ops.maximum(pb, tb))
        giou = inter / ops.maximum(union, 1e-6) - (enclosing - union) / ops.maximum(enclosing, 1e-6)
        per_image = ops.sum((1 - giou) * weight, axis=[1, 2])
        batch = ops.cast(ops.shape(y_true)[0], y_pred.dtype)
        return per_image * batch / ops.maximum(ops.sum(weight), 1e-6)


def compile(model, learning_rate=2e-3, total_steps=1000, weight_decay=1e-4, warmup_fraction=0.05, edges_weight=5.0):
    """AdamW with warm-up into cosine decay; focal loss on the heatmap, GIoU on the edges."""
    schedule = registry.warmup_cosine(learning_rate, total_steps, warmup_fraction)
    model.compile(
        optimizer=keras.optimizers.AdamW(schedule, weight_decay=weight_decay, global_clipnorm=10.0),
        loss={"heatmap": HeatmapFocalLoss(), "edges": EdgesGIoULoss()},
        loss_weights={"heatmap": 1.0, "edges": edges_weight},
    )
    return model


# ----- ground truth and the metric -----


def pack_ground_truth(ground_truth, max_objects=None):
    """[{"boxes": (n, 4), "classes": (n,)}] -> (N, M, 5) float32 rows x1, y1, x2, y2, class (-1 = none)."""
    m = max_objects or max([len(g["classes"]) for g in ground_truth] + [1])
    packed = np.zeros((len(ground_truth), m, 5), np.float32)
    packed[..., 4] = -1
    for i, g in enumerate(ground_truth):
        n = min(len(g["classes"]), m)
        packed[i, :n, :4] = np.asarray(g["boxes"], np.float32)[:n]
        packed[i, :n, 4] = np.asarray(g["classes"])[:n]
    return packed


def unpack_ground_truth(labels):
    labels = np.asarray(labels)
    return [{"boxes": row[row[:, 4] >= 0, :4], "classes": row[row[:, 4] >= 0, 4].astype(np.int64)} for row in labels]


def score(outputs, labels, num_classes=None, class_names=None):
    """COCO mAP@[.5:.95] ("map"), mAP@.5 ("map50") and per-class AP of detections against packed labels."""
    from toolkit.metrics import detection as detection_metrics

    ground_truth = unpack_ground_truth(labels)
    if num_classes is None:
        found = [int(g["classes"].max()) for g in ground_truth if len(g["classes"])]
        num_classes = max(found + [int(np.max(outputs["classes"]))]) + 1
    found = detection_metrics.evaluate(outputs, ground_truth, num_classes, class_names)
    return {
        METRIC: found["map"],
        "map50": found["map50"],
        "map75": found["map75"],
        "per_class_ap": found["per_class_ap"],
    }


# ----- agreement between two runtimes -----

MATCH_IOU = 0.99  # two detections are the same one: same class, boxes overlapping at IoU >= 0.99


def _iou_matrix(a, b):
    """IoU of every box in a (n, 4) against every box in b (m, 4), xyxy."""
    x1, y1 = np.maximum(a[:, None, 0], b[None, :, 0]), np.maximum(a[:, None, 1], b[None, :, 1])
    x2, y2 = np.minimum(a[:, None, 2], b[None, :, 2]), np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def compare(outputs, reference):
    """What a user sees, per image: each reference (Keras) detection is matched to an unmatched one of
    the same class at IoU >= MATCH_IOU, in score order.

    The padded, score-sorted arrays are no measure: two near-equal scores that swap, or one box that
    crosses the score threshold on another CPU's kernels, move every row after it (a max abs diff of
    28.5 px with an identical mAP, issue 14). Returns the share of identical detections (matched pairs
    over the larger of the two counts) and, as max_abs_diff, the largest box-coordinate or score
    difference over the matched pairs."""
    matched = total = 0
    worst = 0.0
    for i in range(len(reference["num_detections"])):
        n, m = int(reference["num_detections"][i]), int(outputs["num_detections"][i])
        ref_boxes, out_boxes = np.asarray(reference["boxes"][i, :n], np.float64), np.asarray(outputs["boxes"][i, :m], np.float64)
        ref_classes, out_classes = np.asarray(reference["classes"][i, :n]), np.asarray(outputs["classes"][i, :m])
        ref_scores, out_scores = np.asarray(reference["scores"][i, :n], np.float64), np.asarray(outputs["scores"][i, :m], np.float64)
        total += max(n, m)
        if not n or not m:
            continue
        iou = _iou_matrix(ref_boxes, out_boxes)
        iou[ref_classes[:, None] != out_classes[None, :]] = 0.0
        taken = np.zeros(m, bool)
        for r in np.argsort(-ref_scores, kind="stable"):
            candidates = np.where(~taken & (iou[r] >= MATCH_IOU))[0]
            if not len(candidates):
                continue
            o = candidates[np.argmax(iou[r, candidates])]
            taken[o] = True
            matched += 1
            worst = max(worst, float(np.max(np.abs(ref_boxes[r] - out_boxes[o]))), abs(ref_scores[r] - out_scores[o]))
    return {"identical_detections": matched / total if total else 1.0, "max_abs_diff": worst}


TASK = registry.register(registry.Task(
    name="detection", recipe="detection", metric=METRIC, build=build, compile=compile, score=score,
    compare=compare, inference_model=inference_model, raw_model=raw_model, litert_formats=LITERT_FORMATS,
    float_layers=FLOAT_LAYERS, description="image -> boxes, classes, scores (decoding and NMS inside)",
))  # fmt: skip
