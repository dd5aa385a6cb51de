"""An anchor-free detection head and its decoder (box decoding + non-max suppression in keras.ops).

Why this head (CenterNet's heatmap with TTFNet's box regression, Zhou et al. 2019, Liu et al. 2020):
- One stride-4 map from the FPN neck is enough for the sizes we detect (24-128 px on 128 px
  canvases), so there are no per-level assignment rules (FCOS) and no anchors (RetinaNet).
- Objects are Gaussian peaks on a per-class heatmap (focal loss), found at test time by a 3x3
  max-pool: peak extraction is a pooling op and a top-k, both LiteRT builtins that quantize.
- Every pixel near a centre (inside the object's Gaussian), not only the centre pixel, regresses
  the distances to the four box edges, trained with a GIoU loss: many more regression samples
  per object than CenterNet's single centre, which is what lets it converge in a few epochs on a
  CPU; GIoU optimises the overlap that mAP@[.5:.95] measures.
- The distances come out of a softplus scaled to pixels: positive, monotone, a range that int8 holds.

The decoder (`DetectionDecoder`) turns the two maps into fixed-size padded detections: boxes
(xyxy pixels), scores, classes and the number of valid rows. Greedy class-aware NMS runs on the
top-k peaks as a `keras.ops.while_loop` that stops when no decision changes, exact greedy NMS
written without any backend's NMS op, so the same graph runs on TensorFlow, JAX and torch and
converts to builtin LiteRT ops (WHILE, TOPK_V2, GATHER...): the exported file holds the whole
post-processing.
"""

import keras
from keras import layers, ops

HEATMAP_PRIOR = 0.01  # initial peak probability: keeps the focal loss from swamping early training
EDGE_SCALE = 16.0  # pixels per unit of the softplus output (TTFNet's base): edges up to ~255 px in int8


def detection_head(features, num_classes, channels=64, depth=2, name="detection"):
    """(B, h, w, D) stride-s features -> {"heatmap": (B, h, w, classes) in 0..1, "edges": (B, h, w, 4)
    distances in pixels from each cell centre to the box's left, top, right and bottom edges}."""

    def tower(x, branch):
        for i in range(depth):
            # depthwise-separable: at stride 4 a full 3x3 conv would cost more than the whole backbone
            x = layers.SeparableConv2D(channels, 3, padding="same", use_bias=False, name=f"{name}_{branch}_conv{i}")(x)
            x = layers.BatchNormalization(name=f"{name}_{branch}_bn{i}")(x)
            x = layers.ReLU(name=f"{name}_{branch}_relu{i}")(x)
        return x

    prior = -float(keras.ops.convert_to_numpy(ops.log((1 - HEATMAP_PRIOR) / HEATMAP_PRIOR)))
    heatmap = layers.Conv2D(
        num_classes, 1, bias_initializer=keras.initializers.Constant(prior), name=f"{name}_heatmap_logits"
    )(tower(features, "heatmap"))
    heatmap = layers.Activation("sigmoid", dtype="float32", name="heatmap")(heatmap)
    edges = layers.Conv2D(4, 1, name=f"{name}_edges_conv")(tower(features, "edges"))
    # softplus, not TTFNet's ReLU: a ReLU whose inputs all turn negative outputs 0 px boxes with no gradient
    # back, a dead end some seeds fell into on small data (a tiny detector on 128 images: mAP@.5 0.0 in 4 of
    # 8 seeds, loss stuck at exactly edges_weight x 1); with softplus 8 of 8 reached 1.0 (issue 15)
    edges = layers.Activation("softplus", name=f"{name}_edges_softplus")(edges)
    edges = layers.Rescaling(EDGE_SCALE, dtype="float32", name="edges")(edges)
    return {"heatmap": heatmap, "edges": edges}


@keras.saving.register_keras_serializable(package="toolkit")
class DetectionDecoder(layers.Layer):
    """{"heatmap", "edges"} -> {"boxes": (B, N, 4) xyxy pixels, "scores": (B, N), "classes": (B, N)
    int32, "num_detections": (B,) int32}, N = max_detections, valid rows first, the rest zero.

    stride: pixels per heatmap cell; image_size: (H, W) to clip boxes to; candidates: peaks kept
    before NMS; score_threshold / iou_threshold: the usual; nms_rounds: None runs NMS's rounds in a
    while loop to their fixed point (exact); a number unrolls that many rounds instead, for runtimes
    that take one subgraph only (MediaPipe Tasks), exact whenever NMS settles within them.
    """

    def __init__(
        self,
        stride,
        image_size,
        max_detections=100,
        candidates=100,
        score_threshold=0.05,
        iou_threshold=0.5,
        nms_rounds=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.nms_rounds = None if nms_rounds is None else int(nms_rounds)
        self.stride = int(stride)
        self.image_size = tuple(int(s) for s in image_size)
        self.max_detections = int(max_detections)
        self.candidates = int(candidates)
        self.score_threshold = float(score_threshold)
        self.iou_threshold = float(iou_threshold)

    def call(self, inputs):
        heatmap, edges = inputs["heatmap"], inputs["edges"]
        _, h, w, num_classes = heatmap.shape
        k = min(self.candidates, h * w * num_classes)

        # Peaks: a cell that is the maximum of its 3x3 neighbourhood in its class channel.
        pooled = ops.max_pool(heatmap, pool_size=3, strides=1, padding="same")
        peaks = ops.where(ops.equal(pooled, heatmap), heatmap, ops.zeros_like(heatmap))
        scores, index = ops.top_k(ops.reshape(peaks, (-1, h * w * num_classes)), k, sorted=True)
        classes = index % num_classes
        cell = index // num_classes
        distances = ops.take_along_axis(ops.reshape(edges, (-1, h * w, 4)), ops.expand_dims(cell, -1), axis=1)
        cx = (ops.cast(cell % w, "float32") + 0.5) * self.stride
        cy = (ops.cast(cell // w, "float32") + 0.5) * self.stride
        height, width = self.image_size
        boxes = ops.stack(
            [
                ops.clip(cx - distances[..., 0], 0.0, width),
                ops.clip(cy - distances[..., 1], 0.0, height),
                ops.clip(cx + distances[..., 2], 0.0, width),
                ops.clip(cy + distances[..., 3], 0.0, height),
            ],
            axis=-1,
        )
        keep = ops.cast(scores > self.score_threshold, "float32") * self._nms(boxes, classes)

        # Valid detections first, in score order: scores are sorted, so rank by keep then by position.
        order_key = keep * 2.0 + (1.0 - ops.arange(k, dtype="float32") / k)
        _, order = ops.top_k(order_key, min(self.max_detections, k), sorted=True)
        keep = ops.take_along_axis(keep, order, axis=1)
        boxes = ops.take_along_axis(boxes, ops.expand_dims(order, -1), axis=1) * ops.expand_dims(keep, -1)
        scores = ops.take_along_axis(scores, order, axis=1) * keep
        classes = ops.take_along_axis(classes, order, axis=1) * ops.cast(keep, "int32")
        padding = self.max_detections - min(self.max_detections, k)
        if padding:  # fewer candidates than requested rows (a tiny heatmap): pad with empty rows
            boxes = ops.pad(boxes, [[0, 0], [0, padding], [0, 0]])
            scores, classes = ops.pad(scores, [[0, 0], [0, padding]]), ops.pad(classes, [[0, 0], [0, padding]])
        return {
            "boxes": boxes,
            "scores": scores,
            "classes": ops.cast(classes, "int32"),
            "num_detections": ops.cast(ops.sum(keep, axis=1), "int32"),
        }

    def _nms(self, boxes, classes):
        """Exact greedy NMS over score-sorted candidates, per class: a box survives unless an
        earlier surviving box of its class overlaps it above the threshold. Iterating
        keep_i = not any_j<i(keep_j and suppresses_ji) from all-ones fixes at least one more position
        per round and reaches greedy NMS's answer; the loop stops when a round changes nothing
        (usually 2-3 rounds), so it is exact, bounded by k rounds, and cheap."""
        k = boxes.shape[1]
        x1, y1, x2, y2 = (boxes[..., i] for i in range(4))
        area = ops.maximum(x2 - x1, 0.0) * ops.maximum(y2 - y1, 0.0)
        iw = ops.maximum(ops.minimum(x2[:, :, None], x2[:, None, :]) - ops.maximum(x1[:, :, None], x1[:, None, :]), 0.0)
        ih = ops.maximum(ops.minimum(y2[:, :, None], y2[:, None, :]) - ops.maximum(y1[:, :, None], y1[:, None, :]), 0.0)
        inter = iw * ih
        iou = inter / ops.maximum(area[:, :, None] + area[:, None, :] - inter, 1e-6)
        earlier = ops.triu(ops.ones((k, k)), 1)  # [j, i] = 1 when j ranks before i
        same_class = ops.cast(ops.equal(classes[:, :, None], classes[:, None, :]), "float32")
        suppresses = ops.cast(iou > self.iou_threshold, "float32") * same_class * earlier  # [b, j, i]

        def suppress(keep):  # one round: what the boxes kept so far leave standing
            return 1.0 - ops.max(suppresses * keep[:, :, None], axis=1)

        def step(keep, _changed, rounds):
            new = suppress(keep)
            return new, ops.any(ops.not_equal(new, keep)), rounds + 1

        if self.nms_rounds is not None:
            keep = ops.ones_like(area)
            for _ in range(self.nms_rounds):
                keep = suppress(keep)
            return keep
        keep, _, _ = ops.while_loop(
            lambda keep, changed, rounds: ops.logical_and(changed, rounds < k),
            step,
            (ops.ones_like(area), ops.array(True), ops.array(0)),
        )
        return keep

    def compute_output_spec(self, inputs):
        batch = inputs["heatmap"].shape[0]
        n = self.max_detections
        return {
            "boxes": keras.KerasTensor((batch, n, 4), "float32"),
            "scores": keras.KerasTensor((batch, n), "float32"),
            "classes": keras.KerasTensor((batch, n), "int32"),
            "num_detections": keras.KerasTensor((batch,), "int32"),
        }

    def get_config(self):
        return {
            **super().get_config(),
            "stride": self.stride,
            "image_size": self.image_size,
            "max_detections": self.max_detections,
            "candidates": self.candidates,
            "score_threshold": self.score_threshold,
            "iou_threshold": self.iou_threshold,
            "nms_rounds": self.nms_rounds,
        }
