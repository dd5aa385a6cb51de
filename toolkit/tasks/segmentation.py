"""Semantic segmentation: any registered vision backbone -> FPN neck -> segmentation head (heads/segmentation.py).

Two models share every weight:
- the training model, image -> (B, H, W, classes) float32 logits, trained with plain `model.fit`
  on (B, H, W) integer class maps (0 = background; 255 = "void", ignored by loss and metrics);
- the inference model, the same graph plus `ClassMap` (arg-max, cast to uint8), image -> (B, H, W)
  uint8 class ids: what is saved, exported and scored.

Headline metric: mIoU ("miou") over the whole test split, with pixel accuracy and per-class IoU.
Loss: cross-entropy plus a soft Dice term. Dice scores each class's overlap as a whole, so the
small classes count as much as the background that covers most pixels (cross-entropy alone lets a
model trade thin sleeves and straps for background); cross-entropy keeps per-pixel gradients
well-behaved early on, when Dice's are weak.
"""

import keras
import numpy as np
from keras import ops

from toolkit import backbones
from toolkit.errors import ToolkitError
from toolkit.heads.segmentation import ClassMap, segmentation_head
from toolkit.metrics import segmentation as segmentation_metrics
from toolkit.necks import fpn
import toolkit.tasks.registry as registry

METRIC = "miou"
LITERT_FORMATS = ("tflite_fp32", "tflite_int8")
LEVEL = "P2"  # the FPN level the head reads (stride 4)
IGNORE_INDEX = segmentation_metrics.IGNORE_INDEX


def build(backbone="resnet", input_shape=(128, 128, 1), num_classes=11, neck_channels=96, head_channels=96,
          head_depth=2, **backbone_options):  # fmt: skip
    """The training model: image -> backbone (a nested model) -> FPN -> per-pixel logits.

    num_classes counts the background (class 0)."""
    if num_classes < 2:
        raise ToolkitError(f"segmentation needs at least 2 classes (background and one more), got {num_classes}")
    backbones.require_kind(backbone, "vision")
    check_size(input_shape)
    feature_model = backbones.get(backbone, input_shape, **backbone_options)
    inputs = keras.Input(input_shape, name="image")
    pyramid = fpn(feature_model(inputs), channels=neck_channels)
    logits = segmentation_head(pyramid[LEVEL], num_classes, head_channels, head_depth, 2 ** int(LEVEL[1:]))
    return keras.Model(inputs, logits, name="segmenter")


def check_size(input_shape):
    height, width = input_shape[:2]
    if height % 32 or width % 32:
        raise ToolkitError(f"segmentation needs an image size divisible by 32 (the P5 stride), got {height}x{width}")


def inference_model(model, output=None):
    """image -> (B, H, W) uint8 class map. `output` names the logits output of a multi-output model."""
    logits = model.output if output is None else model.output[output]
    return keras.Model(model.input, ClassMap(name="class_map")(logits), name="segmenter_with_argmax")


@keras.saving.register_keras_serializable(package="toolkit")
class SegmentationLoss(keras.losses.Loss):
    """Cross-entropy (optionally class-weighted) + dice_weight * soft Dice, on logits.

    y_true: (B, H, W) or (B, H, W, 1) integer classes, `ignore_index` pixels left out of both terms.
    The Dice term is 1 - mean over classes of 2|P.T| / (|P| + |T|), computed over the whole batch
    (one figure per class, as mIoU is), smoothed by 1 pixel so that absent classes score ~1."""

    def __init__(self, num_classes, dice_weight=1.0, class_weights=None, ignore_index=IGNORE_INDEX,
                 name="segmentation_loss", **kwargs):  # fmt: skip
        super().__init__(name=name, **kwargs)
        self.num_classes, self.dice_weight, self.ignore_index = int(num_classes), float(dice_weight), int(ignore_index)
        self.class_weights = None if class_weights is None else [float(w) for w in class_weights]

    def call(self, y_true, y_pred):
        y_true = ops.cast(y_true, "int32")
        if len(y_true.shape) == 4:
            y_true = y_true[..., 0]
        valid = ops.cast(ops.not_equal(y_true, self.ignore_index), y_pred.dtype)
        one_hot = ops.one_hot(ops.where(ops.equal(y_true, self.ignore_index), 0, y_true), self.num_classes)
        one_hot = one_hot * valid[..., None]
        log_p = ops.log_softmax(y_pred, axis=-1)
        per_pixel = -ops.sum(one_hot * log_p, axis=-1)
        if self.class_weights is not None:
            per_pixel = per_pixel * ops.sum(one_hot * ops.convert_to_tensor(self.class_weights, y_pred.dtype), axis=-1)
        cross_entropy = ops.sum(per_pixel) / ops.maximum(ops.sum(valid), 1.0)
        if not self.dice_weight:
            return cross_entropy
        p = ops.exp(log_p) * valid[..., None]
        intersection = ops.sum(p * one_hot, axis=[0, 1, 2])
        sizes = ops.sum(p, axis=[0, 1, 2]) + ops.sum(one_hot, axis=[0, 1, 2])
        dice = ops.mean((2 * intersection + 1.0) / (sizes + 1.0))
        return cross_entropy + self.dice_weight * (1.0 - dice)

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes, "dice_weight": self.dice_weight,
                "class_weights": self.class_weights, "ignore_index": self.ignore_index}  # fmt: skip


def miou_metric(num_classes, name=METRIC):
    """mIoU during training (keras.metrics.MeanIoU on the arg-max of the logits, void pixels ignored)."""
    return keras.metrics.MeanIoU(num_classes, name=name, sparse_y_pred=False, ignore_class=IGNORE_INDEX)


def compile(model, learning_rate=3e-3, total_steps=1000, weight_decay=1e-4, dice_weight=1.0, class_weights=None):
    """AdamW with warm-up into cosine decay; cross-entropy + Dice; mIoU as the training metric. The
    classes (background included) are the model's output channels."""
    num_classes = int(model.output.shape[-1])
    model.compile(
        optimizer=keras.optimizers.AdamW(
            registry.warmup_cosine(learning_rate, total_steps), weight_decay=weight_decay, global_clipnorm=10.0
        ),
        loss=SegmentationLoss(num_classes, dice_weight, class_weights),
        metrics=[miou_metric(num_classes)],
    )
    return model


# ----- the metric -----


def class_map_of(outputs):
    """The class map among a model's outputs: the array itself, or the "class_map" entry of a dict."""
    return outputs["class_map"] if isinstance(outputs, dict) else outputs


def score(outputs, labels, num_classes=None):
    """mIoU ("miou"), pixel accuracy and per-class IoU of a class map against the true masks."""
    predicted, truth = np.asarray(class_map_of(outputs)), np.asarray(labels)
    if num_classes is None:
        real = truth[truth != IGNORE_INDEX]
        num_classes = int(max(real.max() if real.size else 0, predicted.max() if predicted.size else 0)) + 1
    found = segmentation_metrics.evaluate(predicted, truth, num_classes)
    return {METRIC: found["miou"], "pixel_accuracy": found["pixel_accuracy"],
            "per_class_iou": {str(k): v for k, v in found["per_class_iou"].items()}}  # fmt: skip


def compare(outputs, reference):
    """Beside max abs diff (which, on class ids, is a difference of ids): the fraction of pixels
    whose class differs from the Keras model's."""
    a, b = np.asarray(class_map_of(outputs)), np.asarray(class_map_of(reference))
    return {"differing_pixels": float(np.mean(a != b))}


TASK = registry.register(registry.Task(
    name="segmentation", recipe="segmentation", metric=METRIC, build=build, compile=compile, score=score,
    compare=compare, inference_model=inference_model, litert_formats=LITERT_FORMATS,
    description="image -> class map (argmax inside)",
))  # fmt: skip
