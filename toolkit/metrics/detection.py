"""COCO-style box mAP in plain numpy, matching pycocotools' COCOeval (iouType "bbox").

The setting is COCOeval's headline one: area range "all", at most 100 detections per image and class,
IoU thresholds .50:.05:.95, 101-point interpolated precision, no crowd annotations.

Crowd regions: ground truth here has no `iscrowd` flag, and toolkit.data.detection drops COCO's
iscrowd=1 annotations. COCOeval instead keeps them as "ignore" regions (a detection matched to one
counts neither true nor false), so on data with crowd annotations a detection on a crowd region is a
false positive here and mAP can come out below pycocotools'. An image with more ground-truth boxes
of a class than 100, or than the detector returns, cannot reach full recall, in COCOeval as here
(the detection recipe warns when a test image holds more objects than --max-detections).

Without crowd annotations every step follows pycocotools/cocoeval.py (2.0.x) so that the numbers
agree with it, quirks included:

- IoU is maskApi.c's `bbIou` on xywh boxes (no +1 pixel); a pair whose overlap width or height is <= 0
  has IoU 0.
- Per image and class, detections are ordered by a stable sort of -score and only the first 100 kept
  (`evaluateImg`'s `dtind[0:maxDet]`); each in turn takes the still-unmatched ground-truth box with the
  highest IoU >= the threshold, the later box winning a tie (the `ious[dind,gind] < iou: continue` scan).
- An unmatched detection whose area w*h is outside [0, 1e10] is ignored rather than counted false (the
  area-range rule; it only bites on boxes with x2 < x1 xor y2 < y1, which never match anything).
- Per class, detections of all images are ranked by a stable sort of -score in image order (`accumulate`),
  precision is made monotone from the right and read at recall thresholds 0:.01:1 (0 past the last
  recall reached); a class without ground truth gets no AP and is left out of every mean.
"""

import itertools

import numpy as np

from toolkit.errors import ToolkitError

# Exactly pycocotools' Params.setDetParams: linspace, because arange's points drift above the true values.
IOU_THRESHOLDS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)
RECALL_THRESHOLDS = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)
MAX_DETECTIONS = 100
AREA_RANGE = (0.0**2, 1e5**2)

# evaluateImg starts its best-IoU scan at min(t, 1 - 1e-10), so an IoU of exactly 1 always matches.
_MATCH_THRESHOLDS = np.minimum(IOU_THRESHOLDS, 1 - 1e-10)
_AP50 = int(np.flatnonzero(IOU_THRESHOLDS == 0.5)[0])
_AP75 = int(np.flatnonzero(IOU_THRESHOLDS == 0.75)[0])


def evaluate(predictions, ground_truth, num_classes, class_names=None):
    """COCO box mAP of a detector's padded outputs against per-image ground truth.

    Args:
        predictions: dict of numpy arrays as the exported detector returns them: `boxes` (N, K, 4) xyxy
            pixels, `scores` (N, K), `classes` (N, K) integer ids, `num_detections` (N,): only the first
            `num_detections[i]` rows of image i are read.
        ground_truth: one dict per image, `{"boxes": (n, 4) xyxy pixels, "classes": (n,)}`; n may be 0.
        num_classes: class ids run 0..num_classes-1.
        class_names: optional list of num_classes names, used as the keys of the per-class dicts.

    Returns:
        `{"map", "map50", "map75", "per_class_ap", "per_class_ap50"}`: mAP@[.5:.95], AP at IoU .5 and .75
        averaged over the classes that have ground truth, and AP@[.5:.95] / AP@.5 per such class (keyed by
        name, or str(id) without names). Classes without ground-truth boxes are omitted.
    """
    names = _class_names(num_classes, class_names)
    num_classes = len(names)
    num_images = _num_images(ground_truth)
    det_boxes, det_scores, det_classes, det_images = _detections(predictions, num_images, num_classes)
    gt_boxes, gt_classes, gt_images = _ground_truth(ground_truth, num_classes)
    if not len(gt_classes):
        raise ToolkitError(f"ground_truth has no boxes in any of its {num_images} images: mAP is undefined")

    det_boxes, det_scores, det_classes, det_images = _keep_top_per_image_and_class(
        det_boxes, det_scores, det_classes, det_images, MAX_DETECTIONS
    )
    det_group = det_images * num_classes + det_classes
    gt_group = gt_images * num_classes + gt_classes
    matched = _match(det_boxes, det_scores, det_group, gt_boxes, gt_group)
    area = det_boxes[:, 2] * det_boxes[:, 3]
    outside_area = (area < AREA_RANGE[0]) | (area > AREA_RANGE[1])
    ignored = ~matched & outside_area[:, None]

    gt_counts = np.bincount(gt_classes, minlength=num_classes)
    evaluated = np.flatnonzero(gt_counts)
    precision = np.stack(
        [
            _precision(matched[det_classes == c], ignored[det_classes == c], det_scores[det_classes == c], gt_counts[c])
            for c in evaluated
        ],
        axis=-1,
    )  # (T, R, classes with ground truth), as COCOeval's eval["precision"][..., area "all", maxDets 100]
    return {
        "map": float(np.mean(precision)),
        "map50": float(np.mean(precision[_AP50])),
        "map75": float(np.mean(precision[_AP75])),
        "per_class_ap": {names[c]: float(np.mean(precision[:, :, i])) for i, c in enumerate(evaluated)},
        "per_class_ap50": {names[c]: float(np.mean(precision[_AP50, :, i])) for i, c in enumerate(evaluated)},
    }


def box_iou_xywh(det_xywh, gt_xywh):
    """IoU of aligned pairs of xywh boxes, as pycocotools' `bbIou` computes it (float64, no +1 pixel)."""
    width = np.minimum(det_xywh[:, 2] + det_xywh[:, 0], gt_xywh[:, 2] + gt_xywh[:, 0]) - np.maximum(
        det_xywh[:, 0], gt_xywh[:, 0]
    )
    height = np.minimum(det_xywh[:, 3] + det_xywh[:, 1], gt_xywh[:, 3] + gt_xywh[:, 1]) - np.maximum(
        det_xywh[:, 1], gt_xywh[:, 1]
    )
    overlaps = (width > 0) & (height > 0)
    intersection = np.where(overlaps, width * height, 0.0)
    union = det_xywh[:, 2] * det_xywh[:, 3] + gt_xywh[:, 2] * gt_xywh[:, 3] - intersection
    return np.where(overlaps, intersection / np.where(overlaps, union, 1.0), 0.0)


def _match(det_boxes, det_scores, det_group, gt_boxes, gt_group):
    """Greedy matching of COCOeval.evaluateImg at every IoU threshold: (detections, T) bool "is a true positive".

    Matching is sequential within an (image, class) group but independent across groups, so step s handles
    the s-th candidate detection of every group at once; only detections with some IoU >= .5 are candidates.
    """
    num_dets, num_thresholds = len(det_scores), len(IOU_THRESHOLDS)
    matched = np.zeros((num_dets, num_thresholds), bool)
    if not num_dets or not len(gt_group):
        return matched
    # Every (detection, ground truth) pair of the same image and class; a stable sort keeps each group's
    # ground truth in input order, which decides IoU ties.
    gt_order = np.argsort(gt_group, kind="stable")
    sorted_gt_group = gt_group[gt_order]
    first = np.searchsorted(sorted_gt_group, det_group, side="left")
    counts = np.searchsorted(sorted_gt_group, det_group, side="right") - first
    pair_det = np.repeat(np.arange(num_dets), counts)
    offsets = np.arange(len(pair_det)) - np.repeat(np.cumsum(counts) - counts, counts)
    pair_gt = gt_order[np.repeat(first, counts) + offsets]
    pair_iou = box_iou_xywh(det_boxes[pair_det], gt_boxes[pair_gt])
    keep = pair_iou >= _MATCH_THRESHOLDS[0]
    pair_det, pair_gt, pair_iou = pair_det[keep], pair_gt[keep], pair_iou[keep]
    if not len(pair_det):
        return matched

    # Step of each candidate detection: its rank among its group's candidates, by stable descending score.
    candidates = np.unique(pair_det)
    by_score = candidates[np.lexsort((-det_scores[candidates], det_group[candidates]))]
    groups = det_group[by_score]
    group_starts = np.flatnonzero(np.r_[True, groups[1:] != groups[:-1]])
    step = np.empty(num_dets, np.int64)
    step[by_score] = np.arange(len(by_score)) - np.repeat(group_starts, np.diff(np.r_[group_starts, len(by_score)]))

    # Within a step, each detection's pairs run by ascending IoU then ground-truth position, so the last
    # eligible pair is the highest IoU and, among equals, the later ground truth (as in evaluateImg).
    gt_rank = np.empty(len(gt_order), np.int64)
    gt_rank[gt_order] = np.arange(len(gt_order))
    order = np.lexsort((gt_rank[pair_gt], pair_iou, pair_det, step[pair_det]))
    pair_det, pair_gt, pair_iou = pair_det[order], pair_gt[order], pair_iou[order]
    pair_step = step[pair_det]
    step_bounds = np.searchsorted(pair_step, np.arange(pair_step[-1] + 2))
    gt_taken = np.zeros((len(gt_group), num_thresholds), bool)
    for start, stop in itertools.pairwise(step_bounds):
        dets, gts = pair_det[start:stop], pair_gt[start:stop]
        eligible = (pair_iou[start:stop, None] >= _MATCH_THRESHOLDS) & ~gt_taken[gts]
        position = np.where(eligible, np.arange(stop - start)[:, None], -1)
        det_starts = np.flatnonzero(np.r_[True, dets[1:] != dets[:-1]])
        best = np.maximum.reduceat(position, det_starts, axis=0)  # (detections in this step, T)
        det_index, threshold_index = np.nonzero(best >= 0)
        winners = best[det_index, threshold_index]
        gt_taken[gts[winners], threshold_index] = True
        matched[dets[det_starts[det_index]], threshold_index] = True
    return matched


def _precision(matched, ignored, scores, num_gt):
    """COCOeval.accumulate for one class: (T, R) interpolated precision at the recall thresholds."""
    num_thresholds, num_recalls = len(IOU_THRESHOLDS), len(RECALL_THRESHOLDS)
    precision = np.zeros((num_thresholds, num_recalls))
    if not len(scores):
        return precision
    order = np.argsort(-scores, kind="mergesort")
    matched, ignored = matched[order], ignored[order]
    true_positives = np.cumsum(matched & ~ignored, axis=0).astype(float)
    false_positives = np.cumsum(~matched & ~ignored, axis=0).astype(float)
    recall = true_positives / num_gt
    running = true_positives / (false_positives + true_positives + np.spacing(1))
    running = np.maximum.accumulate(running[::-1], axis=0)[::-1]
    for t in range(num_thresholds):
        index = np.searchsorted(recall[:, t], RECALL_THRESHOLDS, side="left")
        reached = index < len(scores)
        precision[t, reached] = running[index[reached], t]
    return precision


def _keep_top_per_image_and_class(boxes, scores, classes, images, limit):
    """Drops all but the `limit` best-scored detections of each (image, class), ties kept in input order."""
    if not len(scores) or np.max(np.bincount(images * (classes.max() + 1) + classes)) <= limit:
        return boxes, scores, classes, images
    order = np.lexsort((-scores, classes, images))
    key = images[order] * (classes.max() + 1) + classes[order]
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
    rank = np.arange(len(order)) - np.repeat(starts, np.diff(np.r_[starts, len(order)]))
    keep = np.sort(order[rank < limit])
    return boxes[keep], scores[keep], classes[keep], images[keep]


def _class_names(num_classes, class_names):
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
        raise ToolkitError(f"num_classes must be a positive integer, got {num_classes!r}")
    if class_names is None:
        return [str(c) for c in range(num_classes)]
    names = [str(name) for name in class_names]
    if len(names) != num_classes:
        raise ToolkitError(f"class_names has {len(names)} names but num_classes is {num_classes}")
    if len(set(names)) != len(names):
        raise ToolkitError(f"class_names has duplicate names: {names}")
    return names


def _num_images(ground_truth):
    if isinstance(ground_truth, dict) or not hasattr(ground_truth, "__len__"):
        raise ToolkitError(
            f"ground_truth must be a list with one {{'boxes', 'classes'}} dict per image, got {type(ground_truth)}"
        )
    return len(ground_truth)


def _detections(predictions, num_images, num_classes):
    """The valid rows of the padded detector outputs, flattened in (image, row) order; boxes as float64 xywh."""
    if not isinstance(predictions, dict):
        raise ToolkitError(f"predictions must be a dict of arrays, got {type(predictions)}")
    missing = [k for k in ("boxes", "scores", "classes", "num_detections") if k not in predictions]
    if missing:
        raise ToolkitError(f"predictions lacks {missing}; it has {sorted(predictions)}")
    boxes = np.asarray(predictions["boxes"], dtype=np.float64)
    scores = np.asarray(predictions["scores"], dtype=np.float64)
    classes = np.asarray(predictions["classes"])
    counts = np.asarray(predictions["num_detections"])
    if boxes.ndim != 3 or boxes.shape[-1] != 4:
        raise ToolkitError(f"predictions['boxes'] must have shape (images, K, 4), got {boxes.shape}")
    num, k = boxes.shape[:2]
    for key, array, shape in (
        ("scores", scores, (num, k)),
        ("classes", classes, (num, k)),
        ("num_detections", counts, (num,)),
    ):
        if array.shape != shape:
            raise ToolkitError(f"predictions[{key!r}] has shape {array.shape}; boxes {boxes.shape} needs {shape}")
    if num != num_images:
        raise ToolkitError(f"predictions cover {num} images but ground_truth has {num_images}")
    counts = _whole_numbers(counts, "predictions['num_detections']")
    bad = np.flatnonzero((counts < 0) | (counts > k))
    if len(bad):
        raise ToolkitError(
            f"predictions['num_detections'][{bad[0]}] is {counts[bad[0]]}, outside 0..{k} (K, the rows per image)"
        )
    valid = np.arange(k)[None, :] < counts[:, None]
    images = np.nonzero(valid)[0]
    boxes, scores, classes = boxes[valid], scores[valid], classes[valid]
    rows = np.nonzero(valid)[1]
    where = lambda i: f"image {images[i]}, detection {rows[i]}"
    classes = _class_ids(classes, num_classes, "predictions['classes']", where)
    _check_finite(boxes, "predictions['boxes']", where)
    _check_finite(scores, "predictions['scores']", where)
    return _xywh(boxes), scores, classes, images


def _ground_truth(ground_truth, num_classes):
    """All ground-truth boxes flattened in image order: float64 xywh boxes, class ids, image indices."""
    boxes, classes, images = [], [], []
    for i, item in enumerate(ground_truth):
        if not isinstance(item, dict) or "boxes" not in item or "classes" not in item:
            found = f"keys {sorted(item)}" if isinstance(item, dict) else type(item).__name__
            raise ToolkitError(f"ground_truth[{i}] must be a dict with 'boxes' and 'classes', got {found}")
        item_boxes = np.asarray(item["boxes"], dtype=np.float64)
        item_classes = np.asarray(item["classes"])
        if item_boxes.size == 0 and item_classes.size == 0:
            continue
        if item_boxes.ndim != 2 or item_boxes.shape[1] != 4 or item_classes.shape != (len(item_boxes),):
            raise ToolkitError(
                f"ground_truth[{i}] has boxes of shape {item_boxes.shape} and classes of shape {item_classes.shape};"
                " they must be (n, 4) and (n,)"
            )
        boxes.append(item_boxes)
        classes.append(item_classes)
        images.append(np.full(len(item_boxes), i))
    if not boxes:
        return np.zeros((0, 4)), np.zeros(0, np.int64), np.zeros(0, np.int64)
    boxes, images = np.concatenate(boxes), np.concatenate(images)
    rows = np.concatenate([np.arange(len(c)) for c in classes])
    where = lambda j: f"ground_truth[{images[j]}], box {rows[j]}"
    classes = _class_ids(np.concatenate(classes), num_classes, "class", where)
    _check_finite(boxes, "boxes", where)
    inverted = np.flatnonzero((boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1]))
    if len(inverted):
        j = inverted[0]
        raise ToolkitError(f"{where(j)} {boxes[j].tolist()} has x2 < x1 or y2 < y1 (boxes are xyxy pixels)")
    return _xywh(boxes), classes, images


def _xywh(xyxy):
    return np.stack([xyxy[:, 0], xyxy[:, 1], xyxy[:, 2] - xyxy[:, 0], xyxy[:, 3] - xyxy[:, 1]], axis=1)


def _whole_numbers(values, name):
    if values.dtype == bool or not np.issubdtype(values.dtype, np.number):
        raise ToolkitError(f"{name} must hold integers, got dtype {values.dtype}")
    if not np.issubdtype(values.dtype, np.integer):
        fractional = np.flatnonzero(~np.isfinite(values) | (values != np.round(values)))
        if len(fractional):
            raise ToolkitError(f"{name} must hold integers, got {values.flat[fractional[0]].item()}")
    return values.astype(np.int64)


def _class_ids(values, num_classes, name, where):
    if values.dtype == bool or not np.issubdtype(values.dtype, np.number):
        raise ToolkitError(f"{name} must be integer class ids, got dtype {values.dtype}")
    outside = np.flatnonzero(
        ~np.isfinite(values) | (values != np.round(values)) | (values < 0) | (values >= num_classes)
    )
    if len(outside):
        j = outside[0]
        raise ToolkitError(f"{name} {values[j].item()} at {where(j)} is not a class id in 0..{num_classes - 1}")
    return values.astype(np.int64)


def _check_finite(values, name, where):
    finite = np.isfinite(values)
    bad = np.flatnonzero(~(finite if finite.ndim == 1 else np.all(finite, axis=1)))
    if len(bad):
        j = bad[0]
        raise ToolkitError(f"{name} at {where(j)} is not finite: {values[j].tolist()}")
