"""COCO-style mAP: agreement with pycocotools' COCOeval, hand-computed cases, and errors for bad input."""

import contextlib
import io
import time

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from toolkit.errors import ToolkitError
from toolkit.metrics.detection import evaluate


def coco_reference(predictions, ground_truth, num_classes):
    """The same numbers from pycocotools: COCO objects built in memory, COCOeval bbox, area "all", maxDets 100."""
    dataset = {
        "images": [{"id": i + 1, "width": 1000, "height": 1000} for i in range(len(ground_truth))],
        "categories": [{"id": c + 1, "name": str(c)} for c in range(num_classes)],
        "annotations": [],
    }
    for i, item in enumerate(ground_truth):
        for (x1, y1, x2, y2), c in zip(np.asarray(item["boxes"], np.float64).reshape(-1, 4), item["classes"]):
            dataset["annotations"].append(
                {
                    "id": len(dataset["annotations"]) + 1,  # ids start at 1: COCOeval reads 0 as "unmatched"
                    "image_id": i + 1,
                    "category_id": int(c) + 1,
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": (x2 - x1) * (y2 - y1),
                    "iscrowd": 0,
                }
            )
    rows = []  # loadRes's numpy form: image id, x, y, w, h, score, category id
    for i, count in enumerate(predictions["num_detections"]):
        for k in range(int(count)):
            x1, y1, x2, y2 = predictions["boxes"][i, k].astype(np.float64)
            score, c = float(predictions["scores"][i, k]), int(predictions["classes"][i, k])
            rows.append([i + 1, x1, y1, x2 - x1, y2 - y1, score, c + 1])
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = dataset
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(np.array(rows, np.float64))
        coco_eval = COCOeval(coco_gt, coco_dt, "bbox")
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    precision = coco_eval.eval["precision"][:, :, :, 0, -1]  # area "all", maxDets 100
    present = [c for c in range(num_classes) if np.all(precision[:, :, c] > -1)]
    return {
        "map": coco_eval.stats[0],
        "map50": coco_eval.stats[1],
        "map75": coco_eval.stats[2],
        "per_class_ap": {str(c): precision[:, :, c].mean() for c in present},
        "per_class_ap50": {str(c): precision[0, :, c].mean() for c in present},
    }


def random_boxes(rng, count, extent=200.0):
    corner = rng.uniform(0, extent, (count, 2))
    return np.concatenate([corner, corner + rng.uniform(4, 80, (count, 2))], axis=1)


def random_case(
    rng,
    num_images,
    num_classes,
    max_detections=40,
    jitter=0.08,
    miss=0.2,
    duplicate=0.3,
    wrong_class=0.15,
    false_positives=4,
    score_decimals=None,
):
    """Ground truth plus a noisy detector's padded outputs. The last class never has ground truth."""
    ground_truth = []
    predictions = {
        "boxes": np.full((num_images, max_detections, 4), np.nan, np.float32),  # padding must never be read
        "scores": np.full((num_images, max_detections), np.nan, np.float32),
        "classes": np.full((num_images, max_detections), -1, np.int32),
        "num_detections": np.zeros(num_images, np.int32),
    }
    for i in range(num_images):
        count = int(rng.integers(0, 7))  # some images have no objects
        boxes, classes = random_boxes(rng, count), rng.integers(0, num_classes - 1, count)
        ground_truth.append({"boxes": boxes, "classes": classes})
        copies = np.where(rng.random(count) < miss, 0, 1 + (rng.random(count) < duplicate))
        source = np.repeat(np.arange(count), copies)
        size = np.tile(boxes[source, 2:] - boxes[source, :2], 2)
        found = boxes[source] + rng.normal(0, jitter, (len(source), 4)) * size
        found_classes = np.where(
            rng.random(len(source)) < wrong_class, rng.integers(0, num_classes, len(source)), classes[source]
        )
        num_false = int(rng.integers(0, false_positives + 1))
        det_boxes = np.concatenate([found, random_boxes(rng, num_false)])
        det_classes = np.concatenate([found_classes, rng.integers(0, num_classes, num_false)])
        det_scores = np.concatenate([rng.uniform(0.3, 1.0, len(source)), rng.uniform(0.0, 0.8, num_false)])
        if score_decimals is not None:
            det_scores = np.round(det_scores, score_decimals)  # many exact ties, inside and across images
        order = rng.permutation(len(det_scores))[:max_detections]
        n = len(order)
        predictions["boxes"][i, :n] = det_boxes[order]
        predictions["scores"][i, :n] = det_scores[order]
        predictions["classes"][i, :n] = det_classes[order]
        predictions["num_detections"][i] = n
    return predictions, ground_truth


def assert_matches_reference(predictions, ground_truth, num_classes):
    ours = evaluate(predictions, ground_truth, num_classes)
    reference = coco_reference(predictions, ground_truth, num_classes)
    for key in ("map", "map50", "map75"):
        assert ours[key] == pytest.approx(reference[key], abs=1e-3), key
    for key in ("per_class_ap", "per_class_ap50"):
        assert ours[key].keys() == reference[key].keys(), key
        for name, value in reference[key].items():
            assert ours[key][name] == pytest.approx(value, abs=1e-3), (key, name)
    return ours


def pack(rows_per_image, max_detections=None):
    """Padded detector outputs from one list of (xyxy box, score, class) per image."""
    k = max_detections or max(1, *(len(rows) for rows in rows_per_image))
    n = len(rows_per_image)
    predictions = {
        "boxes": np.zeros((n, k, 4), np.float32),
        "scores": np.zeros((n, k), np.float32),
        "classes": np.zeros((n, k), np.int64),
        "num_detections": np.array([len(rows) for rows in rows_per_image]),
    }
    for i, rows in enumerate(rows_per_image):
        for j, (box, score, c) in enumerate(rows):
            predictions["boxes"][i, j], predictions["scores"][i, j], predictions["classes"][i, j] = box, score, c
    return predictions


def truth(*boxes_and_classes):
    boxes = np.array([b for b, _ in boxes_and_classes], np.float64).reshape(-1, 4)
    return {"boxes": boxes, "classes": np.array([c for _, c in boxes_and_classes], np.int64)}


# (a) agreement with pycocotools


@pytest.mark.parametrize(
    "seed, options",
    [
        (0, {}),
        (1, {"jitter": 0.15, "false_positives": 10}),
        (2, {"score_decimals": 1}),  # ties in score
        (3, {"score_decimals": 2, "duplicate": 0.8}),
        (4, {"miss": 0.6, "wrong_class": 0.4}),
        (5, {"jitter": 0.03, "max_detections": 5}),  # outputs truncated at K
        (6, {"num_classes": 2}),
        (7, {"num_images": 3}),
    ],
)
def test_agrees_with_pycocotools_on_noisy_detections(seed, options):
    rng = np.random.default_rng(seed)
    options = {"num_images": 40, "num_classes": 5, **options}
    predictions, ground_truth = random_case(rng, **options)
    # Make sure the cases the comparison is about are really present.
    assert any(len(item["classes"]) == 0 for item in ground_truth) or options["num_images"] < 10
    result = assert_matches_reference(predictions, ground_truth, options["num_classes"])
    assert str(options["num_classes"] - 1) not in result["per_class_ap"]  # the class without ground truth
    assert 0.0 < result["map"] < 1.0


def test_perfect_predictions_score_one_like_pycocotools():
    rng = np.random.default_rng(10)
    predictions, ground_truth = random_case(
        rng, 30, 4, jitter=0.0, miss=0.0, duplicate=0.0, wrong_class=0.0, false_positives=0
    )
    result = assert_matches_reference(predictions, ground_truth, 4)
    assert result["map"] == pytest.approx(1.0) and result["map75"] == pytest.approx(1.0)
    assert all(ap == pytest.approx(1.0) for ap in result["per_class_ap"].values())


def test_images_without_predictions_agree_with_pycocotools():
    rng = np.random.default_rng(11)
    predictions, ground_truth = random_case(rng, 30, 4)
    predictions["num_detections"][::3] = 0  # a third of the images: the detector found nothing
    assert_matches_reference(predictions, ground_truth, 4)


def test_equal_iou_goes_to_the_later_ground_truth_like_pycocotools():
    # The first detection overlaps both boxes with IoU 180/220; COCOeval gives it the later one (B), so
    # the second detection, which overlaps B with 0.82 but A with only 140/260 = 0.54, matches A at .5 only.
    ground_truth = [truth(([0, 0, 20, 10], 0), ([4, 0, 24, 10], 0))]
    predictions = pack([[([2, 0, 22, 10], 0.9, 0), ([6, 0, 26, 10], 0.8, 0)]])
    result = assert_matches_reference(predictions, ground_truth, 1)
    # t = .5: both found; t = .55 .. .8: half the recall at precision 1 (51 of 101 points); t >= .85: none.
    assert result["map"] == pytest.approx((1 + 6 * 51 / 101) / 10)
    assert result["map50"] == pytest.approx(1.0)


def test_only_100_detections_per_image_and_class_count_like_pycocotools():
    ground_truth = [truth(([0, 0, 20, 10], 0))]
    clutter = [([50, 50, 60, 60], 0.9 - j * 0.001, 0) for j in range(120)]
    hit = ([0, 0, 20, 10], 0.1, 0)
    # 120 better-scored false positives of the same class push the hit past the 100th place: AP 0.
    result = assert_matches_reference(pack([[*clutter, hit]]), ground_truth, 2)
    assert result["map"] == 0.0
    # Split over two classes, 60 each: the hit is 61st in its class and counts (precision 1/61).
    split = [(box, score, j % 2) for j, (box, score, _) in enumerate(clutter)]
    result = assert_matches_reference(pack([[*split, hit]]), ground_truth, 2)
    assert result["map"] == pytest.approx(1 / 61)


def test_degenerate_predicted_boxes_agree_with_pycocotools():
    ground_truth = [truth(([0, 0, 20, 10], 0))]
    predictions = pack(
        [
            [
                ([5, 5, 5, 5], 0.97, 0),  # zero area: a false positive
                ([20, 0, 0, 10], 0.95, 0),  # x2 < x1 only: negative area, outside the area range, ignored
                ([20, 10, 0, 0], 0.9, 0),  # both flipped: positive area, never overlaps: a false positive
                ([0, 0, 20, 10], 0.5, 0),
            ]
        ]
    )
    result = assert_matches_reference(predictions, ground_truth, 1)
    assert result["map"] == pytest.approx(1 / 3)


# (b) hand-computed cases


def test_one_box_at_iou_058_passes_two_thresholds():
    ground_truth = [truth(([0, 0, 10, 10], 0))]
    result = evaluate(pack([[([0, 0, 10, 5.8], 0.9, 0)]]), ground_truth, 1)  # IoU 58/100
    assert result["map50"] == pytest.approx(1.0)
    assert result["map"] == pytest.approx(0.2)  # thresholds .50 and .55 of ten
    assert result["map75"] == 0.0
    # IoU exactly 0.6 also passes .60: the test is IoU >= threshold.
    assert evaluate(pack([[([0, 0, 10, 6], 0.9, 0)]]), ground_truth, 1)["map"] == pytest.approx(0.3)


def test_false_positive_costs_only_when_it_scores_higher():
    ground_truth = [truth(([0, 0, 10, 10], 0))]
    hit, miss = ([0, 0, 10, 10], 0.9, 0), ([50, 50, 60, 60], 0.5, 0)
    assert evaluate(pack([[hit, miss]]), ground_truth, 1)["map"] == pytest.approx(1.0)
    louder_miss = ([50, 50, 60, 60], 0.95, 0)
    assert evaluate(pack([[hit, louder_miss]]), ground_truth, 1)["map"] == pytest.approx(0.5)


def test_missed_object_halves_the_recall():
    ground_truth = [truth(([0, 0, 10, 10], 0), ([20, 20, 30, 30], 0))]
    result = evaluate(pack([[([0, 0, 10, 10], 0.9, 0)]]), ground_truth, 1)
    assert result["map"] == pytest.approx(51 / 101)  # precision 1 at recall 0, .01, ..., .50


def test_duplicate_detection_is_a_false_positive_after_full_recall():
    ground_truth = [truth(([0, 0, 10, 10], 0))]
    predictions = pack([[([0, 0, 10, 10], 0.9, 0), ([0, 0, 10, 10.5], 0.8, 0)]])
    assert evaluate(predictions, ground_truth, 1)["map"] == pytest.approx(1.0)


def test_wrong_class_scores_zero_and_classes_without_truth_are_left_out():
    ground_truth = [truth(([0, 0, 10, 10], 0))]
    result = evaluate(pack([[([0, 0, 10, 10], 0.9, 1)]]), ground_truth, 3, class_names=["cat", "dog", "bird"])
    assert result["map"] == 0.0
    assert result["per_class_ap"] == {"cat": 0.0} and result["per_class_ap50"] == {"cat": 0.0}


def test_false_positive_on_an_image_without_objects_counts():
    ground_truth = [truth(([0, 0, 10, 10], 0)), truth()]
    predictions = pack([[([0, 0, 10, 10], 0.5, 0)], [([0, 0, 10, 10], 0.9, 0)]])
    assert evaluate(predictions, ground_truth, 1)["map"] == pytest.approx(0.5)


def test_per_class_ap_is_averaged_into_map():
    ground_truth = [truth(([0, 0, 10, 10], 0), ([20, 20, 30, 30], 1))]
    predictions = pack([[([0, 0, 10, 10], 0.9, 0), ([40, 40, 50, 50], 0.8, 1)]])
    result = evaluate(predictions, ground_truth, 2, class_names=["a", "b"])
    assert result["per_class_ap"] == {"a": pytest.approx(1.0), "b": 0.0}
    assert result["map"] == pytest.approx(0.5) and result["map50"] == pytest.approx(0.5)


def test_no_detections_at_all_score_zero_and_padding_is_not_read():
    ground_truth = [truth(([0, 0, 10, 10], 0)), truth()]
    predictions = {
        "boxes": np.full((2, 3, 4), np.nan),
        "scores": np.full((2, 3), np.inf),
        "classes": np.full((2, 3), -7),
        "num_detections": np.zeros(2, np.int64),
    }
    assert evaluate(predictions, ground_truth, 1)["map"] == 0.0


def test_float_class_ids_and_counts_from_a_litert_model_are_accepted():
    ground_truth = [truth(([0, 0, 10, 10], 2))]
    predictions = pack([[([0, 0, 10, 10], 0.9, 2)]])
    predictions["classes"] = predictions["classes"].astype(np.float32)
    predictions["num_detections"] = predictions["num_detections"].astype(np.float32)
    assert evaluate(predictions, ground_truth, 3)["map"] == pytest.approx(1.0)


def test_a_thousand_images_of_a_hundred_detections_evaluate_quickly():
    rng = np.random.default_rng(12)
    num_images, k, num_classes = 1000, 100, 20
    ground_truth = [
        {"boxes": random_boxes(rng, n), "classes": rng.integers(0, num_classes, n)}
        for n in rng.integers(0, 15, num_images)
    ]
    boxes = np.stack([random_boxes(rng, k) for _ in range(num_images)])
    classes = rng.integers(0, num_classes, (num_images, k))
    for i, item in enumerate(ground_truth):  # half the rows near a true box, most of the right class
        if len(item["classes"]):
            source = rng.integers(0, len(item["classes"]), k // 2)
            size = np.tile(item["boxes"][source, 2:] - item["boxes"][source, :2], 2)
            boxes[i, ::2] = item["boxes"][source] + rng.normal(0, 0.1, (k // 2, 4)) * size
            classes[i, ::2] = np.where(rng.random(k // 2) < 0.8, item["classes"][source], classes[i, ::2])
    predictions = {
        "boxes": boxes.astype(np.float32),
        "scores": rng.random((num_images, k)).astype(np.float32),
        "classes": classes,
        "num_detections": np.full(num_images, k),
    }
    start = time.process_time()
    result = evaluate(predictions, ground_truth, num_classes)
    assert time.process_time() - start < 2.0  # about 0.1 s here; pycocotools takes about 5 s
    assert 0.05 < result["map"] < result["map50"] < 0.9


# (c) errors


def good_inputs():
    return pack([[([0, 0, 10, 10], 0.9, 0)], []], max_detections=2), [truth(([0, 0, 10, 10], 0)), truth()]


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda p, g: p.pop("scores"), r"predictions lacks \['scores'\]"),
        (lambda p, g: p.update(boxes=p["boxes"][..., :3]), r"predictions\['boxes'\] must have shape \(images, K, 4\)"),
        (
            lambda p, g: p.update(scores=p["scores"][:, :1]),
            r"predictions\['scores'\] has shape \(2, 1\).*needs \(2, 2\)",
        ),
        (lambda p, g: p.update(classes=p["classes"][:1]), r"predictions\['classes'\] has shape \(1, 2\)"),
        (lambda p, g: p.update(num_detections=np.array([1])), r"predictions\['num_detections'\] has shape \(1,\)"),
        (lambda p, g: g.pop(), "predictions cover 2 images but ground_truth has 1"),
        (lambda p, g: p["num_detections"].__setitem__(1, -1), r"num_detections'\]\[1\] is -1, outside 0..2"),
        (lambda p, g: p["num_detections"].__setitem__(0, 3), r"num_detections'\]\[0\] is 3, outside 0..2"),
        (lambda p, g: p.update(num_detections=np.array([0.5, 0])), "must hold integers, got 0.5"),
        (lambda p, g: p["classes"].__setitem__((0, 0), 4), r"predictions\['classes'\] 4 at image 0, detection 0.*0..2"),
        (lambda p, g: p["classes"].__setitem__((0, 0), -1), r"-1 at image 0, detection 0 is not a class id"),
        (lambda p, g: p["boxes"].__setitem__((0, 0, 2), np.nan), r"predictions\['boxes'\] at image 0, detection 0"),
        (lambda p, g: p["scores"].__setitem__((0, 0), np.inf), r"predictions\['scores'\] at image 0.*not finite"),
        (lambda p, g: g.__setitem__(1, truth(([0, 0, 5, 5], 3))), r"class 3 at ground_truth\[1\], box 0"),
        (lambda p, g: g.__setitem__(1, truth(([0, 0, 5, np.inf], 1))), r"boxes at ground_truth\[1\], box 0.*finite"),
        (lambda p, g: g.__setitem__(1, truth(([5, 0, 0, 5], 1))), r"ground_truth\[1\], box 0.*x2 < x1 or y2 < y1"),
        (lambda p, g: g.__setitem__(1, {"boxes": np.zeros((2, 4))}), r"ground_truth\[1\] must be a dict with"),
        (
            lambda p, g: g.__setitem__(1, {"boxes": np.zeros((2, 4)), "classes": np.zeros(3)}),
            r"ground_truth\[1\] has boxes of shape \(2, 4\) and classes of shape \(3,\)",
        ),
        (lambda p, g: g.__setitem__(0, truth()), "ground_truth has no boxes in any of its 2 images"),
    ],
)
def test_bad_input_gets_a_clear_error(mutate, message):
    predictions, ground_truth = good_inputs()
    evaluate(predictions, ground_truth, 3)  # the unmutated inputs are fine
    mutate(predictions, ground_truth)
    with pytest.raises(ToolkitError, match=message):
        evaluate(predictions, ground_truth, 3)


def test_bad_class_setup_gets_a_clear_error():
    predictions, ground_truth = good_inputs()
    with pytest.raises(ToolkitError, match="num_classes must be a positive integer, got 0"):
        evaluate(predictions, ground_truth, 0)
    with pytest.raises(ToolkitError, match="class_names has 2 names but num_classes is 3"):
        evaluate(predictions, ground_truth, 3, class_names=["a", "b"])
