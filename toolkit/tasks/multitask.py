"""One backbone, several heads, one LiteRT file: detection + segmentation + classification on scenes.

One backbone instance and one FPN neck feed every head:
- detection: heads/detection.py on the FPN's stride-4 level (heatmap + edges, CenterNet/TTFNet);
- segmentation: heads/segmentation.py on the same fused level (per-pixel logits, bilinear x4);
- classification: "which classes are in this scene", a multi-label sigmoid head on the backbone's
  P5 (global average pool + dense). Why multi-label presence rather than one label per scene (the
  class of the largest item, say): a scene holds 1-6 items, often of several classes; a single
  label would be ambiguous whenever two items are about the same size and would throw away the
  others, while presence is what a "what is on this shelf" use needs and is exact from the scene.
  Its metric is exact-set accuracy (all classes right at 0.5) beside mean per-class accuracy.

Training model: image -> {"heatmap", "edges", "segmentation", "presence"} (any subset of HEADS),
trained jointly with `model.fit`, one loss per head and per-head weights. Inference model: image ->
{"boxes", "scores", "classes", "num_detections"} (decoding and NMS in the graph, kept float in int8
files), {"class_map"} (uint8 arg-max) and {"presence"} (class probabilities): one file, all outputs.
With one head it is that head's single-task model, which is how the benchmark compares.

Labels travel as a dict by head: {"detection": (N, M, 5) packed boxes, "segmentation": (N, H, W)
class maps (class + 1, 0 = background), "classification": (N, C) 0/1 presence}.
"""

import keras
import numpy as np
from keras import layers

from toolkit import backbones
from toolkit.errors import ToolkitError, choose
from toolkit.heads.detection import DetectionDecoder, detection_head
from toolkit.heads.segmentation import ClassMap, segmentation_head
from toolkit.necks import fpn
import toolkit.tasks.detection as detection
import toolkit.tasks.segmentation as segmentation
import toolkit.tasks.registry as registry

HEADS = ("detection", "segmentation", "classification")
METRIC = "mean_head_score"  # the mean of each head's headline metric: map, miou, presence_exact
HEAD_METRICS = {"detection": "map", "segmentation": "miou", "classification": "presence_exact"}
LITERT_FORMATS = ("tflite_fp32", "tflite_int8")
FLOAT_LAYERS = detection.FLOAT_LAYERS  # as detection: box decoding, NMS and the edge output stay float in int8
LEVEL = "P2"


def check_heads(heads):
    heads = tuple(heads)
    if not heads:
        raise ToolkitError(f"the multi-task model needs at least one head of {', '.join(HEADS)}")
    for head in heads:
        choose("head", head, HEADS)
    return tuple(h for h in HEADS if h in heads)


def build(backbone="resnet", input_shape=(128, 128, 1), num_classes=10, heads=HEADS, neck_channels=48,
          head_channels=48, head_depth=2, **backbone_options):  # fmt: skip
    """The training model. num_classes counts object classes (segmentation adds the background)."""
    heads = check_heads(heads)
    backbones.require_kind(backbone, "vision")
    segmentation.check_size(input_shape)
    feature_model = backbones.get(backbone, input_shape, **backbone_options)
    inputs = keras.Input(input_shape, name="image")
    pyramid = feature_model(inputs)
    outputs = {}
    if "detection" in heads or "segmentation" in heads:
        fused = fpn(pyramid, channels=neck_channels)[LEVEL]
        if "detection" in heads:
            outputs.update(detection_head(fused, num_classes, head_channels, head_depth))
        if "segmentation" in heads:
            outputs["segmentation"] = segmentation_head(fused, num_classes + 1, head_channels, head_depth,
                                                        2 ** int(LEVEL[1:]))  # fmt: skip
    if "classification" in heads:
        pooled = layers.GlobalAveragePooling2D(name="presence_pool")(pyramid["P5"])
        outputs["presence"] = layers.Dense(num_classes, activation="sigmoid", dtype="float32", name="presence")(pooled)
    return keras.Model(inputs, outputs, name="multitask")


def heads_of(model):
    names = set(model.output)
    return tuple(h for h, key in zip(HEADS, ("heatmap", "segmentation", "presence")) if key in names)


def num_classes_of(model):
    """Object classes (without the background) as the model's heads are built for them."""
    shapes = {name: int(t.shape[-1]) for name, t in model.output.items()}
    return shapes["heatmap"] if "heatmap" in shapes else shapes["presence"] if "presence" in shapes \
        else shapes["segmentation"] - 1


def inference_model(model, max_detections=100, score_threshold=0.05, iou_threshold=0.5):
    """The training model plus each head's post-processing: one graph, every output."""
    out, heads = {}, heads_of(model)
    if "detection" in heads:
        maps = {"heatmap": model.output["heatmap"], "edges": model.output["edges"]}
        stride = model.input.shape[1] // maps["heatmap"].shape[1]
        decoder = DetectionDecoder(stride, model.input.shape[1:3], max_detections, max(max_detections, 100),
                                   score_threshold, iou_threshold, name="decoder")  # fmt: skip
        out.update(decoder(maps))
    if "segmentation" in heads:
        out["class_map"] = ClassMap(name="class_map")(model.output["segmentation"])
    if "classification" in heads:
        out["presence"] = model.output["presence"]
    return keras.Model(model.input, out, name="multitask_inference")


# ----- targets (tf ops inside tf.data) -----


def target_encoder(image_shape, num_classes, heads=HEADS):
    """For tf.data: detection batches (images, {"boxes", "classes", "segmentation_mask"}) -> (images, targets)."""
    import tensorflow as tf

    heads = check_heads(heads)

    def encode(images, targets):
        out = {}
        if "detection" in heads:
            out.update(detection.encode_targets(targets["boxes"], targets["classes"], image_shape, num_classes))
        if "segmentation" in heads:
            if "segmentation_mask" not in targets:
                raise ToolkitError("the segmentation head needs data with per-pixel masks (segmentation_mask)")
            out["segmentation"] = tf.cast(targets["segmentation_mask"][..., 0], tf.int32)
        if "classification" in heads:
            out["presence"] = presence(targets["classes"], num_classes)
        return images, out

    return encode


def presence(classes, num_classes):
    """(B, M) class ids, -1 = none -> (B, C) float 0/1: which classes the image holds."""
    import tensorflow as tf

    one_hot = tf.one_hot(tf.maximum(classes, 0), num_classes) * tf.cast(classes >= 0, tf.float32)[..., None]
    return tf.reduce_max(one_hot, axis=1)


def compile(model, learning_rate=3e-3, total_steps=1000, weight_decay=1e-4, head_weights=None,
            dice_weight=1.0, edges_weight=5.0):  # fmt: skip
    """AdamW with warm-up into cosine decay; each head's own loss, times its weight in head_weights."""
    heads = heads_of(model)
    num_classes = num_classes_of(model)
    weights = {h: 1.0 for h in heads} | dict(head_weights or {})
    losses, loss_weights = {}, {}
    if "detection" in heads:
        losses.update(heatmap=detection.HeatmapFocalLoss(), edges=detection.EdgesGIoULoss())
        loss_weights.update(heatmap=weights["detection"], edges=weights["detection"] * edges_weight)
    if "segmentation" in heads:
        losses["segmentation"] = segmentation.SegmentationLoss(num_classes + 1, dice_weight)
        loss_weights["segmentation"] = weights["segmentation"]
    if "classification" in heads:
        losses["presence"] = keras.losses.BinaryCrossentropy()
        loss_weights["presence"] = weights["classification"]
    schedule = registry.warmup_cosine(learning_rate, total_steps)
    model.compile(
        optimizer=keras.optimizers.AdamW(schedule, weight_decay=weight_decay, global_clipnorm=10.0),
        loss=losses,
        loss_weights=loss_weights,
    )
    return model


# ----- ground truth and the metrics -----


def labels_from_ground_truth(ground_truth, masks, num_classes, heads=HEADS):
    """The dict of test labels by head from DetectionData.ground_truth's list and the class maps."""
    heads = check_heads(heads)
    labels = {}
    if "detection" in heads:
        labels["detection"] = detection.pack_ground_truth(ground_truth)
    if "segmentation" in heads:
        labels["segmentation"] = np.asarray(masks, np.uint8)
    if "classification" in heads:
        found = np.zeros((len(ground_truth), num_classes), np.float32)
        for i, g in enumerate(ground_truth):
            found[i, np.asarray(g["classes"], np.int64)] = 1
        labels["classification"] = found
    return labels


def score(outputs, labels, num_classes=None):
    """Each head's metrics (map/map50, miou/pixel_accuracy, presence_exact/presence_accuracy) and their mean."""
    found, headline = {}, []
    if "detection" in labels:
        det = detection.score(outputs, labels["detection"], num_classes)
        found.update(map=det["map"], map50=det["map50"])
        headline.append(det["map"])
    if "segmentation" in labels:
        seg = segmentation.score(outputs["class_map"], labels["segmentation"], None if num_classes is None
                                 else num_classes + 1)  # fmt: skip
        found.update(miou=seg["miou"], pixel_accuracy=seg["pixel_accuracy"])
        headline.append(seg["miou"])
    if "classification" in labels:
        truth = np.asarray(labels["classification"]) > 0.5
        predicted = np.asarray(outputs["presence"]) > 0.5
        found.update(presence_exact=float(np.mean(np.all(predicted == truth, axis=1))),
                     presence_accuracy=float(np.mean(predicted == truth)))  # fmt: skip
        headline.append(found["presence_exact"])
    return {METRIC: float(np.mean(headline)), **found}


def compare(outputs, reference):
    """Each head by its own agreement figure: matched detections (detection.compare), differing
    class-map pixels, and the presence probabilities' difference; max_abs_diff is the larger of the
    matched-detection and presence differences (a class-id difference on the map means nothing)."""
    found, diffs = {}, []
    if "num_detections" in reference:
        found.update(detection.compare(outputs, reference))
        diffs.append(found.pop("max_abs_diff"))
    if "class_map" in reference:
        found.update(segmentation.compare(outputs, reference))
    if "presence" in reference:
        diffs.append(float(np.max(np.abs(np.asarray(outputs["presence"], np.float64) - reference["presence"]))))
    return {**found, "max_abs_diff": max(diffs)} if diffs else found


def raw_model(model):
    """The inference model before post-processing (NMS, arg-max): heatmap, edges, segmentation logits
    and presence, whose order cannot change between runtimes, for the tight fp32 parity check."""
    names = {layer.name for layer in model.layers}
    maps = {name: model.get_layer(name).output for name in ("heatmap", "edges", "segmentation", "presence")
            if name in names}  # fmt: skip
    return keras.Model(model.input, maps, name="multitask_maps")


TASK = registry.register(registry.Task(
    name="multitask", recipe="multitask", metric=METRIC, build=build, compile=compile, score=score,
    compare=compare, inference_model=inference_model, raw_model=raw_model, litert_formats=LITERT_FORMATS,
    float_layers=FLOAT_LAYERS, description="image -> detections, class map and classes present, one graph",
))  # fmt: skip
