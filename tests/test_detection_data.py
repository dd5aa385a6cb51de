import json
import os

import numpy as np
import pytest

from tests.conftest import run_python
from toolkit.data import detection, fashion_mnist, scenes
from toolkit.errors import ToolkitError

SMALL = {"train": 24, "validation": 8, "test": 8}


@pytest.fixture(scope="module")
def items():
    """Real Fashion-MNIST test items (the first 500) to compose scenes from."""
    if not os.path.isdir(fashion_mnist.DEFAULT_SOURCE):
        pytest.skip("Debian's dataset-fashion-mnist is not installed (make installs it)")
    images, labels = fashion_mnist.read_split(fashion_mnist.DEFAULT_SOURCE, "test")
    return images[:500], labels[:500]


@pytest.fixture(scope="module")
def composed(items):
    rng = np.random.default_rng(5)
    return [scenes.compose_scene(rng, *items, return_items=True) for _ in range(40)]


def _tight_box(mask):
    ys, xs = np.nonzero(mask)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)


def _unoccluded(scene, k):
    """True when object k's visible pixels span its whole box (nothing on top cuts its extent)."""
    return np.array_equal(_tight_box(scene[4][..., 0] == k + 1), scene[1][k])


def _solid(scene, k):
    """Unoccluded, and its two outermost rows and columns on each side hold 2+ pixels: no one-pixel
    tail that nearest-neighbour resampling of the mask could drop while the box rightly keeps it."""
    if not _unoccluded(scene, k):
        return False
    x1, y1, x2, y2 = scene[1][k].astype(int)
    mask = scene[4][y1:y2, x1:x2, 0] == k + 1
    rows, cols = mask.sum(axis=1), mask.sum(axis=0)
    return min(rows[:2].min(), rows[-2:].min(), cols[:2].min(), cols[-2:].min()) >= 2


def test_compose_scene_boxes_and_masks_match_the_pasted_items(items, composed):
    counts = [len(scene[1]) for scene in composed]
    assert min(counts) >= 1 and max(counts) <= 6 and len(set(counts)) >= 4
    for image, boxes, classes, segmentation, instance, used in composed:
        assert image.shape == segmentation.shape == instance.shape == (128, 128, 1) and image.dtype == np.uint8
        assert boxes.dtype == np.float32 and classes.dtype == np.int32
        np.testing.assert_array_equal(classes, items[1][used])
        sides = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
        assert (boxes >= 0).all() and (boxes <= 128).all() and (sides >= 20).all() and (sides <= 64).all()
        # The class map is the instance map seen through each object's class.
        lookup = np.concatenate([[0], classes + 1])
        np.testing.assert_array_equal(segmentation, lookup[instance])
        for k, box in enumerate(boxes):
            visible = instance[..., 0] == k + 1
            # Each object stays in view, and all of it lies inside its (full-extent) box.
            assert visible.any()
            inside = np.zeros_like(visible)
            inside[int(box[1]) : int(box[3]), int(box[0]) : int(box[2])] = True
            assert not (visible & ~inside).any()
    # Where no object sits on top of another, the box is exactly the visible item's tight box.
    assert sum(_unoccluded(scene, k) for scene in composed for k in range(len(scene[1]))) > 60


def test_compose_scene_is_deterministic_and_pastes_the_items_pixels(items):
    first = scenes.compose_scene(np.random.default_rng(11), *items)
    second = scenes.compose_scene(np.random.default_rng(11), *items)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    other = scenes.compose_scene(np.random.default_rng(12), *items)
    assert not np.array_equal(first[0], other[0])
    image, _, _, _, instance = first
    # Foreground pixels are the item's own bright pixels, above the threshold used for the mask.
    assert (image[instance > 0] > scenes.FOREGROUND).all()


def test_fresh_scenes_compose_new_training_scenes_each_pass_and_replay_by_seed(items):
    """--scenes-per-epoch: every pass composes other scenes from the items; the same seed replays the
    same passes (what an interrupted run re-reads); boxes and masks are exact as in the stored scenes."""

    def passes(seed, count=2):
        dataset = scenes.fresh_scenes(*items, 6, seed)
        return [list(dataset.as_numpy_iterator()) for _ in range(count)]

    first, second = passes(7)
    assert all(a["image"].shape == (128, 128, 1) and a["image"].dtype == np.uint8 for a in first)
    assert not all(np.array_equal(a["image"], b["image"]) for a, b in zip(first, second))  # new scenes a pass
    replayed = passes(7)
    for a, b in zip(first + second, replayed[0] + replayed[1]):
        np.testing.assert_array_equal(a["image"], b["image"])
        np.testing.assert_array_equal(a["boxes"], b["boxes"])
    for example in first:
        assert example["classes"].dtype == np.int32 and len(example["classes"]) == len(example["boxes"]) >= 1
        for k, box in enumerate(example["boxes"]):
            visible = example["instance_mask"][..., 0] == k + 1
            assert visible.any() and (example["segmentation_mask"][..., 0][visible] == example["classes"][k] + 1).all()
            ys, xs = np.nonzero(visible)  # the visible pixels lie inside the item's (full) box
            assert box[0] <= xs.min() and xs.max() < box[2] and box[1] <= ys.min() and ys.max() < box[3]


def test_fresh_scenes_only_for_the_scenes_source(tmp_path):
    with pytest.raises(ToolkitError, match="--scenes-per-epoch composes Fashion Scenes"):
        detection.load(f"coco:{tmp_path / 'none.json'}", scenes_per_epoch=100)


def test_small_builder_is_deterministic_disjoint_and_readable(fashion_small, tmp_path):
    builder = scenes.builder(fashion_small, str(tmp_path / "a"), sizes=SMALL)
    again = scenes.builder(fashion_small, str(tmp_path / "b"), sizes=SMALL)
    data = detection.from_builder(builder, "scenes-small")
    assert data.sizes == SMALL and data.image_shape == (128, 128, 1)
    assert data.class_names == fashion_mnist.CLASS_NAMES
    images, truth = data.ground_truth("test")
    images_again, truth_again = detection.from_builder(again, "again").ground_truth("test")
    np.testing.assert_array_equal(images, images_again)  # the same files give the same scenes
    for a, b in zip(truth, truth_again):
        np.testing.assert_array_equal(a["boxes"], b["boxes"])
    # Boxes read back through TFDS's normalised bbox layout are the whole-pixel boxes we wrote.
    for example in data.train.as_numpy_iterator():
        np.testing.assert_array_equal(example["boxes"], np.round(example["boxes"]))
        assert example["classes"].dtype == np.int32 and len(example["classes"]) == len(example["boxes"])
        for k, box in enumerate(example["boxes"]):
            ys, xs = np.nonzero(example["instance_mask"][..., 0] == k + 1)
            assert box[0] <= xs.min() and xs.max() < box[2] and box[1] <= ys.min() and ys.max() < box[3]
    # No item appears in two splits: train uses the first 90% of the train file, validation the rest.
    used = {s: np.concatenate([e["objects"]["item"] for e in builder.as_dataset(split=s).as_numpy_iterator()])
            for s in SMALL}  # fmt: skip
    assert used["train"].max() < 1800 <= used["validation"].min() and used["validation"].max() < 2000
    assert used["test"].max() < 500


def test_real_builder_on_the_installed_fashion_mnist(tmp_path):
    if not os.path.isdir(fashion_mnist.DEFAULT_SOURCE):
        pytest.skip("Debian's dataset-fashion-mnist is not installed (make installs it)")
    builder = scenes.builder(data_dir=str(tmp_path), sizes=SMALL)
    used = {s: np.concatenate([e["objects"]["item"] for e in builder.as_dataset(split=s).as_numpy_iterator()])
            for s in SMALL}  # fmt: skip
    assert used["train"].max() < 54000 <= used["validation"].min()
    train, _ = fashion_mnist.read_split(fashion_mnist.DEFAULT_SOURCE, "train")
    example = next(builder.as_dataset(split="validation").as_numpy_iterator())
    # The pasted pixels come from the named Fashion-MNIST item: its brightest pixel survives resizing.
    crop = example["image"][example["instance_mask"] == 1]
    assert abs(int(crop.max()) - int(train[example["objects"]["item"][0]].max())) <= 40
    with pytest.raises(ToolkitError, match="positive count"):
        scenes.builder(data_dir=str(tmp_path), sizes={"train": 0, "validation": 1, "test": 1})


@pytest.mark.slow
def test_full_default_builder(scenes_data_dir):
    data = detection.load("scenes", data_dir=scenes_data_dir)
    assert data.sizes == scenes.SIZES
    _, truth = data.ground_truth("validation")
    counts = np.array([len(t["classes"]) for t in truth])
    assert counts.min() >= 1 and counts.max() <= 6 and 3 < counts.mean() < 4
    assert set(np.concatenate([t["classes"] for t in truth])) == set(range(10))


def _write_coco(folder, mutate=None, sizes=((40, 30),) * 6, mode="L"):
    from PIL import Image

    rng = np.random.default_rng(0)
    images, annotations = [], []
    for i, (w, h) in enumerate(sizes):
        name = f"img{i}.png"
        Image.fromarray(rng.integers(0, 255, (h, w, 3) if mode == "RGB" else (h, w), dtype=np.uint8)).save(
            folder / name
        )
        images.append({"id": 100 + i, "file_name": name, "width": w, "height": h})
        if i != 2:  # image 102 has no annotations: a negative
            annotations.append({"id": 10 * i, "image_id": 100 + i, "category_id": 7, "bbox": [2, 3, 10, 5]})
            annotations.append({"id": 10 * i + 1, "image_id": 100 + i, "category_id": 3, "bbox": [30, 20, 20, 20]})
    coco = {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": 7, "name": "dog"}, {"id": 3, "name": "cat"}],
    }
    if mutate:
        mutate(coco)
    path = folder / "annotations.json"
    path.write_text(json.dumps(coco))
    return str(path)


def test_coco_round_trip(tmp_path):
    path = _write_coco(tmp_path)
    data = detection.load(f"coco:{path}", validation_fraction=1 / 6, test_fraction=1 / 6)
    assert data.class_names == ["cat", "dog"]  # category-id order: 3, then 7
    assert data.image_shape == (30, 40, 1) and sum(data.sizes.values()) == 6
    seen = {}
    for split in ("train", "validation", "test"):
        images, truth = data.ground_truth(split)
        assert images.shape[1:] == (30, 40, 1)
        for image, t in zip(images, truth):
            seen[image.tobytes()] = t
    from PIL import Image

    for i in range(6):
        t = seen[np.asarray(Image.open(tmp_path / f"img{i}.png"))[..., None].tobytes()]
        if i == 2:
            assert t["boxes"].shape == (0, 4) and t["classes"].shape == (0,)
        else:
            # [x, y, w, h] -> xyxy; the second box, [30, 20, 50, 40], is clipped to the 40x30 image.
            np.testing.assert_array_equal(t["boxes"], [[2, 3, 12, 8], [30, 20, 40, 30]])
            np.testing.assert_array_equal(t["classes"], [1, 0])
    resized = detection.load(
        f"coco:{path},images={tmp_path}", image_size=20, validation_fraction=1 / 6, test_fraction=1 / 6
    )
    _, truth = resized.ground_truth("train")
    boxes = next(t["boxes"] for t in truth if len(t["boxes"]))
    np.testing.assert_allclose(boxes, [[1, 2, 6, 16 / 3], [15, 40 / 3, 20, 20]], rtol=1e-6)


def test_coco_mixed_sizes_and_colour(tmp_path):
    path = _write_coco(tmp_path, sizes=((40, 30), (50, 30), (40, 30)), mode="RGB")
    with pytest.raises(ToolkitError, match="images differ in size.*pass image_size"):
        detection.load(f"coco:{path}")
    data = detection.load(f"coco:{path}", image_size=32, validation_fraction=1 / 3, test_fraction=1 / 3)
    assert data.image_shape == (32, 32, 3)
    assert next(data.train.as_numpy_iterator())["image"].shape == (32, 32, 3)


def _set(key, value, index=0, part="annotations"):
    def mutate(coco):
        coco[part][index][key] = value

    return mutate


@pytest.mark.parametrize(
    "mutate, message",
    [
        (_set("bbox", [45, 3, 10, 5]), r"annotation id 0: box \[45, 3, 55, 8\].*outside the 40x30 image"),
        (_set("bbox", [-20, 3, 10, 5]), r"annotation id 0: box \[-20, 3, -10, 8\].*outside"),
        (_set("bbox", [2, 3, 0.5, 5]), r"annotation id 0: bbox \[2, 3, 0.5, 5\] is degenerate"),
        (_set("bbox", [39.5, 3, 10, 5]), r"annotation id 0: box \[39.5, 3, 49.5, 8\].*degenerate"),
        (_set("bbox", [2, 3, 10, float("nan")]), r"annotation id 0: bbox \[2, 3, 10, nan\] has a non-finite"),
        (_set("bbox", [2, 3, 10]), r"annotation id 0 bbox \[2, 3, 10\] is not \[x, y, width, height\]"),
        (_set("category_id", 99), "annotation id 0 has category id 99, which is not in 'categories'"),
        (_set("image_id", 5), "annotation id 0 refers to image id 5"),
        (_set("file_name", "gone.png", part="images"), r"gone.png \(image id 100\) does not exist"),
        (_set("width", 41, part="images"), "image id 100 says 41x30 but .*img0.png is 40x30"),
        (lambda coco: coco["annotations"][0].pop("bbox"), "annotation id 0 has no 'bbox'"),
        (lambda coco: coco["images"][1].pop("file_name"), "image id 101 has no 'file_name'"),
        (lambda coco: coco.pop("categories"), "no 'categories' list"),
    ],
)
def test_coco_bad_input_is_named(tmp_path, mutate, message):
    path = _write_coco(tmp_path, mutate)
    with pytest.raises(ToolkitError, match=f"annotations.json: .*{message}" if "gone" not in message else message):
        detection.load(f"coco:{path}")


def test_coco_bad_files_are_named(tmp_path):
    path = _write_coco(tmp_path)
    (tmp_path / "img3.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    with pytest.raises(ToolkitError, match="img3.png: not a readable image"):
        detection.load(f"coco:{path}")
    (tmp_path / "bad.json").write_text('{"images": [}')
    with pytest.raises(ToolkitError, match=r"bad.json: not valid JSON \(line 1, column 13"):
        detection.load(f"coco:{tmp_path / 'bad.json'}")
    with pytest.raises(ToolkitError, match="nowhere.json does not exist"):
        detection.load(f"coco:{tmp_path / 'nowhere.json'}")
    with pytest.raises(ToolkitError, match="unknown detection data source 'voc'"):
        detection.load("voc")


def test_crowd_annotations_are_skipped(tmp_path):
    def crowd(coco):
        coco["annotations"].append({"id": 999, "image_id": 100, "category_id": 3, "bbox": [0, 0, 40, 30], "iscrowd": 1})

    data = detection.load(f"coco:{_write_coco(tmp_path, crowd)}", validation_fraction=1 / 6, test_fraction=1 / 6)
    counts = [len(t["classes"]) for s in ("train", "validation", "test") for t in data.ground_truth(s)[1]]
    assert sorted(counts) == [0, 2, 2, 2, 2, 2]


def _write_split_files(folder, splits, mutate=None, crowded=(4,)):
    """COCO split files over one folder of 20 images: splits maps a json name to the image indices it
    holds. Each image has 2 objects, image 2 none and the `crowded` ones 5. mutate(name, coco) may
    change one file."""

    def add(coco):
        coco["annotations"] += [{"id": 500 + 10 * i + k, "image_id": 100 + i, "category_id": 7,
                                 "bbox": [1 + 5 * k, 1, 4, 4]} for i in crowded for k in range(3)]  # fmt: skip

    whole = json.loads(open(_write_coco(folder, add, sizes=((40, 30),) * 20)).read())
    paths = {}
    for name, indices in splits.items():
        ids = {100 + i for i in indices}
        coco = {
            "images": [e for e in whole["images"] if e["id"] in ids],
            "annotations": [a for a in whole["annotations"] if a["image_id"] in ids],
            "categories": list(whole["categories"]),
        }
        if mutate:
            mutate(name, coco)
        paths[name] = folder / f"{name}.json"
        paths[name].write_text(json.dumps(coco))
    return paths


def _pixels_of(data, split):
    return {image.tobytes() for image in data.ground_truth(split)[0]}


def test_coco_split_files_load_as_given_without_carving(tmp_path):
    from PIL import Image

    paths = _write_split_files(tmp_path, {"train": range(12), "val": range(12, 16), "test": range(16, 20)})
    data = detection.load(f"coco:{paths['train']},val={paths['val']},test={paths['test']},images={tmp_path}")
    assert data.sizes == {"train": 12, "validation": 4, "test": 4}  # nothing carved from train
    assert data.source == f"coco:{paths['train']},val={paths['val']},test={paths['test']}"
    image = lambda i: np.asarray(Image.open(tmp_path / f"img{i}.png"))[..., None].tobytes()
    assert _pixels_of(data, "validation") == {image(i) for i in range(12, 16)}
    assert _pixels_of(data, "test") == {image(i) for i in range(16, 20)}
    assert data.class_names == ["cat", "dog"]
    counts = {i: 0 if i == 2 else 5 if i == 4 else 2 for i in range(12)}
    assert sorted(data.object_counts("train")) == sorted(counts.values())
    np.testing.assert_array_equal(data.object_counts("test"), [2, 2, 2, 2])
    assert [len(t["classes"]) for t in data.ground_truth("train")[1]] == list(data.object_counts("train"))

    # Only a test file: validation is carved from train, the test split is the file's.
    only_test = detection.load(f"coco:{paths['train']},test={paths['test']}", validation_fraction=0.25)
    assert only_test.sizes == {"train": 9, "validation": 3, "test": 4}
    assert _pixels_of(only_test, "test") == {image(i) for i in range(16, 20)}
    assert not _pixels_of(only_test, "validation") & _pixels_of(only_test, "train")
    # Only a validation file: the test split is carved, with --test-fraction's share.
    only_val = detection.load(f"coco:{paths['train']},val={paths['val']}", test_fraction=0.5)
    assert only_val.sizes == {"train": 6, "validation": 4, "test": 6}
    # One file, as before: all three carved, the same way as the single-json form always did.
    single = detection.load(f"coco:{paths['train']}", validation_fraction=0.25, test_fraction=0.25)
    assert single.sizes == {"train": 6, "validation": 3, "test": 3}


@pytest.mark.parametrize(
    "splits, mutate, source, message",
    [
        ({"train": range(12), "val": range(10, 14)}, None, "{train},val={val}",
         r"image img1[01].png is in the train file .*train.json and the validation file .*val.json"),
        ({"train": range(12), "test": range(12, 16)},
         lambda name, coco: name == "test" and coco["categories"][0].update(name="hound"),
         "{train},test={test}",
         r"categories differ between .*train.json and .*test.json: id 7 is 'dog' in the first and 'hound'"),
        ({"train": range(12), "val": range(12, 16)},
         lambda name, coco: name == "val" and coco["categories"].append({"id": 9, "name": "bird"}),
         "{train},val={val}", r"differ between .*train.json and .*val.json: id 9 is missing in the first and 'bird'"),
        ({"train": range(12)}, None, "{train},val={train}.missing", r"COCO annotation file .*missing does not exist"),
        ({"train": range(12)}, None, "{train},valid=x.json", r"cannot read 'valid=x.json'; use coco:TRAIN.json"),
        ({"train": range(12)}, None, "val=x.json", "no training file"),
    ],
)  # fmt: skip
def test_coco_split_files_that_disagree_are_refused(tmp_path, splits, mutate, source, message):
    paths = _write_split_files(tmp_path, splits, mutate)
    with pytest.raises(ToolkitError, match=message):
        detection.load("coco:" + source.format(**paths))


def test_split_fractions_change_the_split_sizes(tmp_path):
    from recipes import classification, detection as detection_recipe
    from toolkit import recipe

    paths = _write_split_files(tmp_path, {"train": range(20)})
    args = detection_recipe.parse_args(["--validation-fraction", "0.3", "--test-fraction", "0.2"])
    data = detection.load(f"coco:{paths['train']}", **recipe.split_fractions(args))
    assert data.sizes == {"train": 10, "validation": 6, "test": 4}
    defaults = detection.load(f"coco:{paths['train']}", **recipe.split_fractions(detection_recipe.parse_args([])))
    assert defaults.sizes == {"train": 16, "validation": 2, "test": 2}
    images = np.zeros((20, 8, 8, 1), np.uint8)
    arrays = detection.from_arrays(images, [np.zeros((0, 4))] * 20, [np.zeros(0, int)] * 20, ["a"], 0.45, 0.05)
    assert arrays.sizes == {"train": 10, "validation": 9, "test": 1}
    for argv, message in [
        (["--test-fraction", "1"], r"--test-fraction: expected a fraction in \[0, 1\), got '1'"),
        (["--validation-fraction", "-0.1"], "--validation-fraction: expected a fraction"),
        (["--validation-fraction", "nan"], "--validation-fraction: expected a fraction"),
    ]:
        with pytest.raises(ToolkitError, match=message):
            classification.parse_args(argv)
    with pytest.raises(ToolkitError, match="--validation-fraction 0.6 and --test-fraction 0.4 sum to 1 or more"):
        recipe.split_fractions(classification.parse_args(["--validation-fraction", "0.6", "--test-fraction", "0.4"]))
    with pytest.raises(ToolkitError, match=r"validation and test fractions \(0.5 \+ 0.5\) sum to 1 or more"):
        detection.load(f"coco:{paths['train']}", validation_fraction=0.5, test_fraction=0.5)
    with pytest.raises(ToolkitError, match=r"the test fraction must lie in \[0, 1\), got 1.5"):
        detection.from_arrays(images, [np.zeros((0, 4))] * 20, [np.zeros(0, int)] * 20, ["a"], 0.1, 1.5)


def test_tiny_and_crowded_splits_are_said_once(tmp_path, capsys):
    from toolkit import recipe

    paths = _write_split_files(tmp_path, {"train": range(16), "val": range(16, 18), "test": range(18, 19)})
    data = detection.load(f"coco:{paths['train']},val={paths['val']},test={paths['test']}")
    recipe.check_splits(data)
    recipe.check_max_objects(data, 2)
    recipe.check_max_objects(data, 5)  # nothing cut at 5: nothing said
    recipe.warn_crowded(data.object_counts("test"), 1, "test", "recall stays below 1", "--max-detections")
    lines = capsys.readouterr().err.splitlines()
    assert lines == [
        "warning: the validation split holds 2 images: its figures mean little; "
        "pass --validation-fraction or a validation file",
        "warning: the test split holds 1 image: its figures mean little; pass --test-fraction or a test file",
        "warning: 1 training/validation image holds more than 2 objects (up to 5): only the first 2 of each are "
        "trained on; pass --max-objects 5",
        "warning: 1 test image holds more than 1 objects (up to 2): recall stays below 1; pass --max-detections 2",
    ]
    with pytest.raises(ToolkitError, match="train.json: the test split is empty"):
        detection.load(f"coco:{paths['train']}", validation_fraction=0.5, test_fraction=0.0)
    images = np.zeros((20, 8, 8, 1), np.uint8)
    empty = detection.from_arrays(images, [np.zeros((0, 4))] * 20, [np.zeros(0, int)] * 20, ["a"], 0.5, 0)
    with pytest.raises(ToolkitError, match="the test split is empty: pass --test-fraction above 0 or a test file"):
        recipe.check_splits(empty)


def test_the_detection_recipe_says_so_once_before_training(tmp_path, monkeypatch, capsys):
    """The recipe itself holds its data against --max-objects and --max-detections, once, before fit."""
    from recipes import detection as detection_recipe
    from toolkit import recipe

    class Stop(Exception):
        pass

    def stop(args):
        raise Stop

    monkeypatch.setattr(recipe, "run_folder", stop)
    paths = _write_split_files(tmp_path, {"train": range(14), "val": range(14, 17), "test": [18]}, crowded=(4, 18))
    argv = ["--data", f"coco:{paths['train']},val={paths['val']},test={paths['test']}", "--image-size", "64",
            "--max-objects", "3", "--max-detections", "4", "--backbone", "edgenet", "--output", str(tmp_path / "o")]
    with pytest.raises(Stop):
        detection_recipe.main(argv)
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning: ")]
    assert err == [
        "warning: the validation split holds 3 images: its figures mean little; "
        "pass --validation-fraction or a validation file",
        "warning: the test split holds 1 image: its figures mean little; pass --test-fraction or a test file",
        "warning: 1 training/validation image holds more than 3 objects (up to 5): only the first 3 of each are "
        "trained on; pass --max-objects 5",
        "warning: 1 test image holds more than 4 objects (up to 5): the detector keeps at most 4 boxes, so their "
        "recall stays below 1; pass --max-detections 5",
    ]


def test_tfds_detection_dataset_not_prepared_says_how(tmp_path):
    with pytest.raises(ToolkitError, match="'voc' is not prepared.*tfds build voc"):
        detection.load("tfds:voc", data_dir=str(tmp_path))


def test_from_arrays_checks_like_coco():
    images = np.zeros((10, 16, 20, 3), np.uint8)
    boxes = [np.array([[1, 2, 8, 9]], np.float32)] * 9 + [np.zeros((0, 4))]
    classes = [np.array([1])] * 9 + [np.zeros(0, int)]
    data = detection.from_arrays(images, boxes, classes, ["a", "b"])
    assert sum(data.sizes.values()) == 10 and data.image_shape == (16, 20, 3)
    clipped = detection.from_arrays(images, [np.array([[-3, 2, 30, 9]])] * 10, [np.array([0])] * 10, ["a", "b"])
    np.testing.assert_array_equal(clipped.ground_truth("test")[1][0]["boxes"], [[0, 2, 20, 9]])
    for bad_boxes, bad_classes, message in [
        ([[1, 2, np.inf, 9]], [0], r"image 4 box 0: box \[1, 2, inf, 9\] has a non-finite"),
        ([[25, 2, 30, 9]], [0], "image 4 box 0: .*outside the 20x16 image"),
        ([[1, 2, 1.5, 9]], [0], "image 4 box 0: .*degenerate"),
        ([[1, 2, 8, 9]], [2], r"image 4 box 0: class 2 is outside 0..1"),
        ([[1, 2, 8]], [0], r"image 4: boxes must be \(n, 4\)"),
    ]:
        with pytest.raises(ToolkitError, match=message):
            detection.from_arrays(
                images,
                boxes[:4] + [np.array(bad_boxes)] + boxes[5:],
                classes[:4] + [np.array(bad_classes)] + classes[5:],
                ["a", "b"],
            )


def test_batches_pad_truncate_and_mark_empty_rows():
    images = np.full((6, 16, 16, 1), 7, np.uint8)
    boxes = [np.array([[0, 0, 4, 4], [1, 1, 5, 5], [2, 2, 6, 6]], np.float32)[:n] for n in (0, 1, 2, 3, 3, 3)]
    classes = [np.array([0, 1, 0])[:n] for n in (0, 1, 2, 3, 3, 3)]
    data = detection.from_arrays(images, boxes, classes, ["a", "b"], validation_fraction=0, test_fraction=0)
    x, y = next(iter(detection.batches(data.train, 6, max_objects=2)))
    assert x.shape == (6, 16, 16, 1) and x.dtype == "float32" and float(x.numpy().max()) == 7.0
    assert y["boxes"].shape == (6, 2, 4) and y["classes"].shape == (6, 2) and y["classes"].dtype == "int32"
    counts = sorted((y["classes"].numpy() >= 0).sum(axis=1))
    assert counts == [0, 1, 2, 2, 2, 2]  # three objects: the first two kept
    assert (y["boxes"].numpy()[y["classes"].numpy() < 0] == 0).all()


def test_augmentation_keeps_boxes_tight_on_their_objects(composed):
    import tensorflow as tf

    max_objects = 6
    pad = lambda a, value: np.concatenate([a, np.full((max_objects - len(a),) + a.shape[1:], value, a.dtype)])
    batch = {
        "images": tf.constant(np.stack([s[0] for s in composed]).astype(np.float32)),
        "boxes": tf.constant(np.stack([pad(s[1], 0) for s in composed])),
        "classes": tf.constant(np.stack([pad(s[2], -1) for s in composed])),
        "instance_mask": tf.constant(np.stack([s[4] for s in composed])),
    }
    dataset = tf.data.Dataset.from_tensors(batch).repeat(3)
    augment = detection.augmentation("flip_scale", 128, seed=3)
    checked, seen = 0, []
    for out in dataset.map(augment).as_numpy_iterator():
        boxes, classes = detection.drop_degenerate(out["boxes"], out["classes"])
        boxes, classes = boxes.numpy(), classes.numpy()
        assert np.isfinite(boxes).all() and (boxes >= 0).all() and (boxes <= 128).all()
        seen.append(boxes)
        for s, scene in enumerate(composed):
            for k in range(len(scene[1])):
                visible = out["instance_mask"][s, ..., 0] == k + 1
                if classes[s, k] < 0:
                    # Dropped: it left the image, bar a sliver under a pixel wide that nearest-neighbour
                    # resampling of the mask may still show as one row or column.
                    assert not visible.any() or min(_tight_box(visible)[2:] - _tight_box(visible)[:2]) <= 1
                    continue
                assert classes[s, k] == scene[2][k]
                if not visible.any():
                    continue  # the whole visible part was cut off, only an occluded corner is in view
                box, tight = boxes[s, k], _tight_box(visible)
                # The box always holds what is visible of its object...
                assert (tight[:2] >= box[:2] - 2).all() and (tight[2:] <= box[2:] + 2).all(), (s, k, box, tight)
                # ... and is tight on it where the object was not occluded or cut at the border.
                if _solid(scene, k) and (box[:2] > 0).all() and (box[2:] < 128).all():
                    np.testing.assert_allclose(box, tight, atol=2, err_msg=f"scene {s} object {k}")
                    checked += 1
    assert checked > 100
    # Every pass draws new transformations, and none leaves the boxes where they were.
    for i, boxes in enumerate(seen):
        assert not np.allclose(boxes, batch["boxes"].numpy()) and not np.allclose(boxes, seen[i - 1])


def test_batches_augment_in_the_pipeline(composed):
    images = np.stack([s[0] for s in composed])
    data = detection.from_arrays(images, [s[1] for s in composed], [s[2] for s in composed], fashion_mnist.CLASS_NAMES)
    for name in detection.AUGMENTATIONS:
        x, y = next(iter(detection.batches(data.train, 8, max_objects=8, shuffle=True, augment=name)))
        assert x.shape == (8, 128, 128, 1) and y["boxes"].shape == (8, 8, 4) and y["classes"].dtype == "int32"
        assert np.isfinite(y["boxes"].numpy()).all()
    with pytest.raises(ToolkitError, match="unknown augmentation 'rotate'; valid: flip, flip_scale, none"):
        detection.augmentation("rotate")
    with pytest.raises(ToolkitError, match="augmentation built for 64x64 images got"):
        detection.batches(data.train, 8, augment=detection.augmentation("flip", 64))


@pytest.mark.cross_backend
@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_augmented_batches_with_masks_on_other_backends(backend, fashion_small, tmp_path):
    out = run_python(
        f"""
import numpy as np
from toolkit.data import detection, scenes
builder = scenes.builder({fashion_small!r}, {str(tmp_path)!r}, sizes={SMALL!r})
data = detection.from_builder(builder, "small")
x, y = next(iter(detection.batches(data.train, 8, augment="flip_scale")))
assert np.isfinite(y["boxes"].numpy()).all() and y["instance_mask"].shape == (8, 128, 128, 1)
print("objects", int((y["classes"].numpy() >= 0).sum()))
""",
        backend=backend,
    )
    assert int(out.split("objects")[-1]) > 8
