"""Semantic-segmentation metrics in vectorised numpy: confusion matrix, per-class IoU, mIoU, pixel accuracy.

Conventions (those of keras.metrics.MeanIoU and the PASCAL VOC / Cityscapes evaluations):
- one confusion matrix is accumulated over every pixel of the split, then IoU = TP / (TP + FP + FN)
  per class; mIoU averages the classes whose union is not empty (a class absent from both the
  truth and the predictions of the whole split is not counted, rather than counted as 0 or 1);
- true pixels labelled `ignore_index` (VOC's 255 "void" border) are left out of every figure.
"""

import numpy as np

IGNORE_INDEX = 255


def confusion_matrix(predicted, truth, num_classes, ignore_index=IGNORE_INDEX):
    """(num_classes, num_classes) int64 counts, rows = true class, columns = predicted class.

    predicted, truth: integer class maps of the same shape (any leading dims; a trailing 1 is fine)."""
    predicted, truth = np.asarray(predicted), np.asarray(truth)
    if predicted.shape != truth.shape:
        predicted, truth = np.squeeze(predicted), np.squeeze(truth)
    if predicted.shape != truth.shape:
        raise ValueError(f"predicted {predicted.shape} and true {truth.shape} class maps differ in shape")
    predicted, truth = predicted.reshape(-1).astype(np.int64), truth.reshape(-1).astype(np.int64)
    keep = truth != ignore_index
    predicted, truth = predicted[keep], truth[keep]
    if truth.size and (truth.min() < 0 or truth.max() >= num_classes):
        raise ValueError(f"true classes must lie in 0..{num_classes - 1}, found {truth.min()}..{truth.max()}")
    predicted = np.clip(predicted, 0, num_classes - 1)
    return np.bincount(truth * num_classes + predicted, minlength=num_classes**2).reshape(num_classes, num_classes)


def per_class_iou(matrix):
    """IoU per class from a confusion matrix; NaN where the class is in neither truth nor predictions."""
    matrix = np.asarray(matrix, np.float64)
    tp = np.diag(matrix)
    union = matrix.sum(axis=0) + matrix.sum(axis=1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / union, np.nan)


def evaluate(predicted, truth, num_classes, ignore_index=IGNORE_INDEX):
    """{"miou", "pixel_accuracy", "per_class_iou": {class id: IoU} (classes seen only), "confusion"}."""
    matrix = confusion_matrix(predicted, truth, num_classes, ignore_index)
    iou = per_class_iou(matrix)
    seen = ~np.isnan(iou)
    total = matrix.sum()
    return {
        "miou": float(np.mean(iou[seen])) if seen.any() else 0.0,
        "pixel_accuracy": float(np.trace(matrix) / total) if total else 0.0,
        "per_class_iou": {int(c): float(iou[c]) for c in np.flatnonzero(seen)},
        "confusion": matrix,
    }
