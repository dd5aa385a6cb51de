"""Object-detection data: one shape for every source, one tf.data pipeline for every recipe.

Sources: `scenes[:FOLDER]` (Fashion Scenes composed from local Fashion-MNIST files, see
toolkit.data.scenes), `tfds:NAME` (any prepared TFDS detection dataset with `image`,
`objects/bbox` and `objects/label`), `coco:TRAIN.json[,val=VAL.json][,test=TEST.json][,images=FOLDER]`
(COCO-format jsons, one per split, and their image folder; a split without its file is carved
deterministically from TRAIN's images, so one json gives all three) and `from_arrays` for the
Python API. Each split is an unbatched tf.data dataset of dicts {"image": uint8 (H, W, C), "boxes":
float32 (n, 4) xyxy in absolute pixels, "classes": int32 (n,)}, n >= 0, plus "segmentation_mask"
and "instance_mask" (H, W, 1) uint8 where the source has them (scenes). Validation is carved from
train when a source has none. `DetectionData.object_counts(split)` gives the objects per image
(without decoding images), which recipes hold against --max-objects and --max-detections.

Bad boxes in user data (COCO json, arrays) are treated the same way everywhere:
- a box partly outside its image is clipped to the image;
- a box entirely outside, degenerate (width or height under 1 pixel after clipping) or with a
  non-finite value is an error naming the file, the annotation (or image and box index) and the value;
- an unknown category id (or class out of range) is an error naming the annotation and the id;
- an image without annotations is kept as a negative example (n = 0);
- COCO "crowd" annotations (iscrowd=1) are dropped, from training and from the ground truth that
  toolkit.metrics.detection scores: COCOeval would instead ignore the detections that fall on a
  crowd region, so on data with crowds a detection there counts as a false positive here;
- split files (val=, test=) must list the same categories (ids and names) as TRAIN, and no image
  file may appear in two of them: either is an error naming both files;
- a missing or unreadable image file, malformed json or a missing key is an error naming it.
"""

import dataclasses
import json
import math
import os

import numpy as np
import tensorflow as tf

from toolkit.data import images as image_data
from toolkit.data import intensity, local_tfds, prefetched
from toolkit.errors import ToolkitError, choose

AUTOTUNE = tf.data.AUTOTUNE
DEFAULT_IMAGE_SIZE = 320  # for TFDS datasets whose images vary in size, when no image_size is given
AUGMENTATIONS = ("none", "flip", "flip_scale")
MASK_KEYS = ("segmentation_mask", "instance_mask")


@dataclasses.dataclass
class DetectionData(image_data.ImageSplits):
    """Examples: {"image", "boxes" (n, 4) xyxy pixels, "classes" (n,)} and, where the source has
    them, "segmentation_mask" / "instance_mask"."""

    # split -> objects per image, as an int array or a tf.data dataset of counts that reads no image
    # (a loader fills what it knows for free); object_counts computes and keeps what is missing.
    counts: dict = None

    def object_counts(self, split):
        """Objects per image of `split`, an int64 array in the split's order."""
        counts = (self.counts or {}).get(split)
        if counts is None:
            counts = getattr(self, split).map(lambda e: tf.shape(e["classes"])[0])
        if isinstance(counts, tf.data.Dataset):
            counts = np.fromiter(counts.as_numpy_iterator(), np.int64)
            self.counts = {**(self.counts or {}), split: counts}
        return np.asarray(counts, np.int64)

    def ground_truth(self, split):
        """The whole split as (images uint8 (N, H, W, C), [{"boxes": (n, 4) float32, "classes": (n,) int32}])."""
        images, targets = [], []
        for example in getattr(self, split).as_numpy_iterator():
            images.append(example["image"])
            targets.append({"boxes": example["boxes"], "classes": example["classes"]})
        return np.stack(images), targets


CACHE_BYTES = 1 << 30  # decoded splits up to this size (images + masks, uint8) are cached in memory


def load(source="scenes", data_dir=None, image_size=None, validation_fraction=0.1, test_fraction=0.1,
         scenes_per_epoch=None, seed=0):  # fmt: skip
    """Loads `source` (see the module docstring) as DetectionData; image_size resizes every image to
    image_size x image_size (aspect not kept, boxes scaled with it). test_fraction is used only by
    sources without a test split (COCO without test=).

    scenes_per_epoch (Fashion Scenes only): train on that many scenes composed afresh each epoch from
    the training items (toolkit.data.scenes.fresh_scenes: copy-paste augmentation) instead of the
    stored ones; validation and test stay the stored scenes. None: as many as the stored training
    split holds (8,000) for scenes, nothing for other sources; 0: the stored training scenes. Fresh
    scenes are the default because the stored 8,000 are learnt by heart: the detector's validation
    mAP went from 0.591 to 0.633 at the same 12 epochs (benchmarks/RESULTS.md, detection)."""
    image_data.check_fractions(validation_fraction, test_fraction)
    if source == "scenes" or source.startswith("scenes:"):
        from toolkit.data import scenes

        if scenes_per_epoch is None:
            scenes_per_epoch = scenes.SIZES["train"]
        folder = source.partition(":")[2] or None
        builder = scenes.builder(folder, data_dir)
        data = from_builder(builder, f"scenes:{folder or scenes.fashion_mnist.DEFAULT_SOURCE}")
        if scenes_per_epoch:
            items, labels = scenes.fashion_mnist.read_split(folder or scenes.fashion_mnist.DEFAULT_SOURCE, "train")
            cut = int(len(items) * scenes.TRAIN_FRACTION)  # the items the stored training scenes use
            data.train = scenes.fresh_scenes(items[:cut], labels[:cut], scenes_per_epoch, seed)
            # counts["train"] stays the stored scenes': fresh ones are composed alike (1-6 objects each)
            data.sizes, data.fresh_train = {**data.sizes, "train": scenes_per_epoch}, True
        return resized(data, image_size) if image_size and tuple(data.image_shape[:2]) != (image_size,) * 2 else data
    if scenes_per_epoch:
        raise ToolkitError(f"--scenes-per-epoch composes Fashion Scenes; {source!r} is another data source")
    if source.startswith("tfds:"):
        builder = local_tfds.prepared_by_name(source[5:], data_dir)
        return from_builder(builder, source, image_size, validation_fraction)
    if source.startswith("coco:"):
        files, folder = coco_files(source[5:])
        return load_coco(files["train"], folder, image_size, validation_fraction, test_fraction,
                         files.get("validation"), files.get("test"))  # fmt: skip
    raise ToolkitError(f"unknown detection data source {source!r}; use scenes[:FOLDER], tfds:NAME or {COCO_FORM}")


COCO_FORM = "coco:TRAIN.json[,val=VAL.json][,test=TEST.json][,images=FOLDER]"
_COCO_KEYS = {"train": "train", "val": "validation", "validation": "validation", "test": "test"}


def coco_files(text):
    """'train.json,val=val.json,test=test.json,images=DIR' -> ({split: json path}, image folder or None)."""
    files, folder = {}, None
    for k, part in enumerate(text.split(",")):
        key, sep, value = part.partition("=")
        if not sep and k == 0:
            key, value = "train", part
        if sep and key == "images" and folder is None:
            folder = value or None
            continue
        split = _COCO_KEYS.get(key) if sep or k == 0 else None
        if split is None or split in files or not value:
            raise ToolkitError(f"coco:{text}: cannot read {part!r}; use {COCO_FORM}")
        files[split] = value
    if "train" not in files:
        raise ToolkitError(f"coco:{text}: no training file; use {COCO_FORM}")
    return files, folder


def from_builder(builder, source, image_size=None, validation_fraction=0.1):
    """DetectionData from a prepared TFDS builder in the standard detection layout."""
    import tensorflow_datasets as tfds

    name = builder.info.name
    features = builder.info.features
    objects = features["objects"] if "objects" in features else {}  # noqa: SIM401 (FeaturesDict has no .get)
    if "image" not in features or "bbox" not in objects or "label" not in objects:
        raise ToolkitError(f"TFDS dataset {name!r} has no image and objects/bbox, objects/label: not detection")
    wanted, sizes = local_tfds.splits(builder, validation_fraction)
    masks = [key for key in MASK_KEYS if key in features]

    def convert(example):
        image = example["image"]
        size = tf.cast(tf.shape(image)[:2], tf.float32)
        ymin, xmin, ymax, xmax = tf.unstack(tf.reshape(example["objects"]["bbox"], (-1, 4)), axis=1)
        boxes = tf.stack([xmin * size[1], ymin * size[0], xmax * size[1], ymax * size[0]], axis=1)
        out = {"image": image, "boxes": boxes, "classes": tf.cast(example["objects"]["label"], tf.int32)}
        out.update({key: example[key] for key in masks})
        return out

    shape = tuple(features["image"].shape)
    ds = {k: builder.as_dataset(split=s).map(convert, num_parallel_calls=AUTOTUNE) for k, s in wanted.items()}
    if None not in shape and sum(sizes.values()) * np.prod(shape) * (1 + len(masks)) <= CACHE_BYTES:
        # Small enough to keep decoded in memory (the embedded scenes: ~0.4 GB): from the second epoch on
        # the 2 cores train instead of decoding PNGs again. Larger datasets stream from their records.
        ds = {k: v.cache() for k, v in ds.items()}
    if image_size is None and None in shape[:2]:
        image_size = DEFAULT_IMAGE_SIZE
    skip = {key: tfds.decode.SkipDecoding() for key in ("image", *masks)}  # counting objects reads no pixels
    counts = {k: builder.as_dataset(split=s, decoders=skip).map(lambda e: tf.size(e["objects"]["label"]))
              for k, s in wanted.items()}  # fmt: skip
    data = DetectionData(ds["train"], ds["validation"], ds["test"], list(objects["label"].names), shape, source, sizes,
                         counts=counts)  # fmt: skip
    return resized(data, image_size) if image_size and tuple(shape[:2]) != (image_size, image_size) else data


def resized(data, image_size):
    """Resizes every split to image_size x image_size (aspect not kept); boxes scale with the image,
    masks are resized with nearest-neighbour so they keep their ids."""

    def resize(example):
        example = dict(example)
        size = tf.cast(tf.shape(example["image"])[:2], tf.float32)
        image = tf.image.resize(example["image"], (image_size, image_size), antialias=True)
        example["image"] = tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)
        scale = tf.stack([image_size / size[1], image_size / size[0]] * 2)
        example["boxes"] = example["boxes"] * scale
        for key in MASK_KEYS:
            if key in example:
                example[key] = tf.image.resize(example[key], (image_size, image_size), method="nearest")
        return example

    return dataclasses.replace(
        data,
        train=data.train.map(resize, num_parallel_calls=AUTOTUNE),
        validation=data.validation.map(resize, num_parallel_calls=AUTOTUNE),
        test=data.test.map(resize, num_parallel_calls=AUTOTUNE),
        image_shape=(image_size, image_size, data.image_shape[2]),
    )


def check_boxes(boxes, width, height, where):
    """Clips xyxy pixel boxes to the width x height image; `where(j)` names box j in errors.

    Refuses non-finite values, boxes entirely outside the image and degenerate boxes (width or
    height under 1 pixel after clipping)."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    for j, box in enumerate(boxes):
        if not np.isfinite(box).all():
            raise ToolkitError(f"{where(j)}: box {_show(box)} has a non-finite value")
        if box[2] <= 0 or box[3] <= 0 or box[0] >= width or box[1] >= height:
            raise ToolkitError(f"{where(j)}: box {_show(box)} (x1, y1, x2, y2) lies outside the {width}x{height} image")
    clipped = np.clip(boxes, 0, [width, height, width, height])
    for j, (box, clip) in enumerate(zip(boxes, clipped)):
        if clip[2] - clip[0] < 1 or clip[3] - clip[1] < 1:
            raise ToolkitError(
                f"{where(j)}: box {_show(box)} (x1, y1, x2, y2) is degenerate "
                f"(width or height under 1 pixel inside the {width}x{height} image)"
            )
    return clipped.astype(np.float32)


def _show(box):
    return "[" + ", ".join(f"{v:g}" for v in box) + "]"


def from_arrays(
    images, boxes_list, classes_list, class_names, validation_fraction=0.1, test_fraction=0.1, name="arrays"
):
    """Validates in-memory data and splits it deterministically into train/validation/test.

    images: (N, H, W, C) (or (N, H, W)) raw pixels 0..255; boxes_list: N arrays (n_i, 4) xyxy in
    absolute pixels; classes_list: N arrays (n_i,) of ids into class_names."""
    images, _ = image_data.check_arrays(images, np.zeros(len(images), np.int64))
    if len(boxes_list) != len(images) or len(classes_list) != len(images):
        raise ToolkitError(
            f"{len(images)} images need as many box and class arrays, got {len(boxes_list)} and {len(classes_list)}"
        )
    height, width = images.shape[1:3]
    boxes_out, classes_out = [], []
    for i, (boxes, classes) in enumerate(zip(boxes_list, classes_list)):
        boxes = np.asarray(boxes, np.float64)
        classes = np.asarray(classes).reshape(-1)
        if boxes.size == 0:
            boxes = boxes.reshape(0, 4)
        if boxes.ndim != 2 or boxes.shape[1] != 4 or len(boxes) != len(classes):
            raise ToolkitError(f"image {i}: boxes must be (n, 4) with n classes, got {boxes.shape} and {classes.shape}")
        if not np.issubdtype(classes.dtype, np.integer) and len(classes):
            raise ToolkitError(f"image {i}: classes must be integers, got dtype {classes.dtype}")
        bad = np.flatnonzero((classes < 0) | (classes >= len(class_names)))
        if bad.size:
            raise ToolkitError(f"image {i} box {bad[0]}: class {classes[bad[0]]} is outside 0..{len(class_names) - 1}")
        boxes_out.append(check_boxes(boxes, width, height, lambda j, i=i: f"image {i} box {j}"))
        classes_out.append(classes.astype(np.int32))
    splits = image_data._split_indices(len(images), validation_fraction, test_fraction)
    ds = {
        k: _objects_dataset(images[idx], [boxes_out[i] for i in idx], [classes_out[i] for i in idx])
        for k, idx in splits.items()
    }
    return DetectionData(
        ds["train"], ds["validation"], ds["test"], list(class_names), images.shape[1:], name,
        {k: len(idx) for k, idx in splits.items()},
        counts={k: np.array([len(classes_out[i]) for i in idx], np.int64) for k, idx in splits.items()},
    )  # fmt: skip


def _objects_dataset(first, boxes_list, classes_list, decode=None):
    """Unbatched dicts from images (or file names with `decode`) and per-image box/class arrays."""
    lengths = [len(b) for b in boxes_list]
    boxes = tf.RaggedTensor.from_row_lengths(
        np.concatenate(boxes_list or [np.zeros((0, 4))]).astype(np.float32), lengths
    )
    classes = tf.RaggedTensor.from_row_lengths(np.concatenate(classes_list or [np.zeros(0)]).astype(np.int32), lengths)

    def element(image, boxes, classes):
        image = decode(image) if decode else image
        return {"image": image, "boxes": tf.reshape(boxes, (-1, 4)), "classes": tf.reshape(classes, (-1,))}

    return tf.data.Dataset.from_tensor_slices((first, boxes, classes)).map(element, num_parallel_calls=AUTOTUNE)


def load_coco(
    path, images_folder=None, image_size=None, validation_fraction=0.1, test_fraction=0.1,
    validation_path=None, test_path=None,
):  # fmt: skip
    """COCO-format jsons (images, annotations, categories; bbox = [x, y, width, height] in pixels):
    `path` for training, and optionally `validation_path` and `test_path`, with their image folder
    (default: each json's folder). Category ids map to contiguous class ids in id order; every file
    must list the same categories, and no image file may be in two of them. A split without its
    file is carved deterministically from `path`'s images (validation_fraction, test_fraction of
    them), so one json gives all three. Images are read lazily; each is opened once here so that a
    bad one is named now. All images must share one size unless image_size is given."""
    files = {k: f for k, f in (("train", path), ("validation", validation_path), ("test", test_path)) if f}
    image_data.check_fractions(validation_fraction, test_fraction)
    for file in files.values():  # before reading any: a large training file takes a while
        if not os.path.isfile(file):
            raise ToolkitError(f"COCO annotation file {file} does not exist")
    read = {k: _read_coco(file, images_folder) for k, file in files.items()}
    categories = read["train"][0]
    for split, (other, _) in read.items():
        if other != categories:
            raise ToolkitError(_categories_differ(path, categories, files[split], other))
    owner, records = {}, []
    for split, (_, found) in read.items():
        for r in found:
            key = os.path.realpath(r["file"])
            if owner.setdefault(key, split) != split:
                raise ToolkitError(
                    f"image {r['name']} is in the {owner[key]} file {files[owner[key]]} and the {split} file "
                    f"{files[split]}: split files must not share images"
                )
            records.append(dict(r, split=split))
    sizes = {r["size"] for r in records}
    if image_size is None and len(sizes) > 1:
        a, b = sorted(sizes)[:2]
        raise ToolkitError(f"{' and '.join(files.values())}: images differ in size ({a[0]}x{a[1]}, {b[0]}x{b[1]}, "
                           "...); pass image_size")  # fmt: skip
    return _coco_data(files, categories, records, image_size, validation_fraction, test_fraction)


def _categories_differ(first, a, second, b):
    """The first category id whose name differs between two sorted [(id, name)] lists, as one line."""
    show = lambda name: "missing" if name is None else repr(name)
    ids = [cat_id for cat_id, _ in a] + [cat_id for cat_id, _ in b]
    a, b = dict(a), dict(b)
    for cat_id in ids:
        if a.get(cat_id) != b.get(cat_id):
            return (f"categories differ between {first} and {second}: id {cat_id} is {show(a.get(cat_id))} in the "
                    f"first and {show(b.get(cat_id))} in the second (split files must share one category list)")  # fmt: skip
    return f"categories differ between {first} and {second} (split files must share one category list)"


def _read_coco(path, images_folder=None):
    """One COCO json: (sorted [(category id, name)], [one record per image: file, name, size, mode, boxes, classes])."""
    coco = _read_json(path)
    images_folder = images_folder or os.path.dirname(os.path.abspath(path))
    for key in ("images", "annotations", "categories"):
        if not isinstance(coco.get(key), list):
            raise ToolkitError(f"{path}: no '{key}' list (a COCO json holds images, annotations and categories)")
    categories = sorted((_field(path, c, "id", "category", i), _field(path, c, "name", "category", i))
                        for i, c in enumerate(coco["categories"]))  # fmt: skip
    if not categories:
        raise ToolkitError(f"{path}: 'categories' is empty")
    class_of = {cat_id: k for k, (cat_id, _) in enumerate(categories)}
    records, by_id = [], {}
    for i, entry in enumerate(coco["images"]):
        image_id, file_name = _field(path, entry, "id", "image", i), _field(path, entry, "file_name", "image", i)
        if image_id in by_id:
            raise ToolkitError(f"{path}: image id {image_id} appears twice")
        file = os.path.join(images_folder, file_name)
        if not os.path.isfile(file):
            raise ToolkitError(f"{path}: image file {file} (image id {image_id}) does not exist")
        width, height, mode = image_data.check_image_file(file)
        stated = (entry.get("width", width), entry.get("height", height))
        if stated != (width, height):
            raise ToolkitError(
                f"{path}: image id {image_id} says {stated[0]}x{stated[1]} but {file} is {width}x{height}"
            )
        by_id[image_id] = len(records)
        records.append({"file": file, "name": file_name, "size": (width, height), "mode": mode, "boxes": [],
                        "classes": []})  # fmt: skip
    for i, ann in enumerate(coco["annotations"]):
        ann_id = _field(path, ann, "id", "annotation", i)
        image_id, cat_id = (
            _field(path, ann, "image_id", "annotation", i),
            _field(path, ann, "category_id", "annotation", i),
        )
        bbox = _field(path, ann, "bbox", "annotation", i)
        if ann.get("iscrowd", 0):
            continue
        if image_id not in by_id:
            raise ToolkitError(
                f"{path}: annotation id {ann_id} refers to image id {image_id}, which is not in 'images'"
            )
        if cat_id not in class_of:
            raise ToolkitError(f"{path}: annotation id {ann_id} has category id {cat_id}, which is not in 'categories'")
        if not isinstance(bbox, list) or len(bbox) != 4 or not all(isinstance(v, (int, float)) for v in bbox):
            raise ToolkitError(f"{path}: annotation id {ann_id} bbox {bbox!r} is not [x, y, width, height]")
        x, y, w, h = (float(v) for v in bbox)
        record = records[by_id[image_id]]
        where = lambda _, ann_id=ann_id: f"{path}: annotation id {ann_id}"
        if not all(map(math.isfinite, (x, y, w, h))):
            raise ToolkitError(f"{where(0)}: bbox {bbox} has a non-finite value")
        if w < 1 or h < 1:
            raise ToolkitError(f"{where(0)}: bbox {bbox} is degenerate (width or height under 1 pixel)")
        record["boxes"].append(check_boxes([x, y, x + w, y + h], *record["size"], where)[0])
        record["classes"].append(class_of[cat_id])
    if not records:
        raise ToolkitError(f"{path}: 'images' is empty")
    return categories, records


def _coco_data(files, categories, records, image_size, validation_fraction, test_fraction):
    """DetectionData from the records of every split file (`_read_coco`, tagged with their split)."""
    sizes = {r["size"] for r in records}
    channels = 1 if all(r["mode"] in ("1", "L", "LA", "I", "I;16", "F") for r in records) else 3
    width, height = sizes.pop() if image_size is None else (image_size, image_size)

    def decode(file):
        image = tf.io.decode_image(tf.io.read_file(file), channels=channels, dtype=tf.uint8, expand_animations=False)
        image.set_shape((None, None, channels))
        if image_size:
            image = tf.image.resize(image, (image_size, image_size), antialias=True)
            image = tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)
        return tf.ensure_shape(image, (height, width, channels))

    for r in records:
        r["boxes"] = np.asarray(r["boxes"], np.float32).reshape(-1, 4)
        if image_size:
            r["boxes"] *= np.asarray([image_size / r["size"][0], image_size / r["size"][1]] * 2, np.float32)
    records.sort(key=lambda r: r["file"])
    train = [r for r in records if r["split"] == "train"]
    carved = image_data._split_indices(
        len(train), 0 if "validation" in files else validation_fraction, 0 if "test" in files else test_fraction
    )
    splits = {k: [train[i] for i in idx] for k, idx in carved.items()}
    splits.update({k: [r for r in records if r["split"] == k] for k in files if k != "train"})
    for k, split in splits.items():
        if not split:
            raise ToolkitError(f"{files['train']}: the {k} split is empty (give it a fraction above 0 or a {k} file)")
    rule, pixels, every = None, None, [r["file"] for r in records]
    if any(intensity.needs_numpy(f) for f in every):  # TIFF or 16-bit PNG: read now (see toolkit.data.intensity)
        pixels, rule = intensity.load_images(every, [r["file"] for r in splits["train"]], channels,
                                             (image_size,) * 2 if image_size else None)  # fmt: skip

    def first(split):  # the file names `decode` reads, or the pixels read above; typed, so an empty split works
        if pixels is None:
            return tf.constant([r["file"] for r in split], tf.string)
        dtype = next(iter(pixels.values())).dtype
        return np.stack([pixels[r["file"]] for r in split]) if split else np.zeros((0, height, width, channels), dtype)

    ds = {
        k: _objects_dataset(
            first(split), [r["boxes"] for r in split],
            [np.asarray(r["classes"], np.int32) for r in split], decode if pixels is None else None,
        )
        for k, split in splits.items()
    }  # fmt: skip
    keys = {"validation": "val", "test": "test"}
    source = "coco:" + ",".join([files["train"], *(f"{keys[k]}={files[k]}" for k in keys if k in files)])
    return DetectionData(
        ds["train"], ds["validation"], ds["test"], [name for _, name in categories], (height, width, channels),
        source, {k: len(v) for k, v in splits.items()},
        counts={k: np.array([len(r["classes"]) for r in v], np.int64) for k, v in splits.items()}, intensity=rule,
    )  # fmt: skip


def _read_json(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise ToolkitError(f"COCO annotation file {path} does not exist") from None
    except json.JSONDecodeError as e:
        raise ToolkitError(f"{path}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ToolkitError(f"{path}: cannot read ({e})") from None


def _field(path, entry, key, kind, index):
    if not isinstance(entry, dict) or key not in entry:
        name = f"id {entry['id']}" if isinstance(entry, dict) and "id" in entry else f"#{index}"
        raise ToolkitError(f"{path}: {kind} {name} has no '{key}'")
    return entry[key]


class BoxAugmentation:
    """Box-aware augmentation of a batch dict {"images", "boxes", "classes", [*_mask]} inside tf.data.

    Built from Keras 3's preprocessing layers with bounding_box_format="xyxy", run on TensorFlow ops
    inside tf.data on every backend (see _run_layer). flip_scale runs flip, zoom out, shift, zoom in,
    in that order so that every box stays tight: the layers clip boxes to the image after each step
    (keras/src/layers/preprocessing/image_preprocessing/random_zoom.py, get_clipped_bbox), and a box
    cut at the border would be left loose if a later step moved the cut edge inward. Zooming out
    never cuts; a shift or a zoom in only moves a cut edge further out. Masks move with the image
    (nearest-neighbour, as the layers do for "segmentation_masks")."""

    def __init__(self, name, image_size=None, seed=0):
        import keras

        self.name, self.image_size = choose("augmentation", name, AUGMENTATIONS), image_size
        self.layers = []
        if name in ("flip", "flip_scale"):
            self.layers.append(keras.layers.RandomFlip("horizontal", bounding_box_format="xyxy", seed=seed))
        if name == "flip_scale":
            box = {"bounding_box_format": "xyxy", "fill_mode": "constant"}
            self.layers += [
                keras.layers.RandomZoom((0.0, 0.3), seed=seed + 1, **box),  # out: objects down to 1/1.3
                keras.layers.RandomTranslation(0.1, 0.1, seed=seed + 2, **box),
                keras.layers.RandomZoom((-0.4, 0.0), seed=seed + 3, **box),  # in: up to 1/0.6, crops
            ]

    def __call__(self, batch):
        if self.image_size is not None and tuple(batch["images"].shape[1:3]) != (self.image_size, self.image_size):
            raise ToolkitError(
                f"augmentation built for {self.image_size}x{self.image_size} images got {batch['images'].shape[1:3]}"
            )
        if not self.layers:
            return batch
        keys = [key for key in MASK_KEYS if key in batch]
        images, boxes, classes = batch["images"], batch["boxes"], batch["classes"]
        masks = tf.concat([tf.cast(batch[key], tf.float32) for key in keys], axis=-1) if keys else None
        for layer in self.layers:
            images, boxes, classes, masks = _run_layer(layer, images, boxes, classes, masks)
        out = dict(batch, images=images, boxes=boxes, classes=tf.cast(classes, tf.int32))
        for k, key in enumerate(keys):
            out[key] = tf.cast(tf.round(masks[..., k : k + 1]), batch[key].dtype)
        return out


def _run_layer(layer, images, boxes, classes, masks):
    """One Keras layer, one random transformation, applied to images, masks and boxes alike.

    We run the layer's public steps ourselves instead of `layer({"images", "bounding_boxes",
    "segmentation_masks"})`: in Keras 3.15, BaseImagePreprocessingLayer.call transforms the boxes
    before the masks and every transform_bounding_boxes ends with self.backend.reset()
    (image_preprocessing/random_flip.py:184, random_zoom.py:297, random_translation.py:271), so inside
    tf.data on the jax and torch backends the masks then meet jax/torch ops and fail. Here the masks
    go first, on the TensorFlow backend, as DataLayer.__call__ (data_layer.py:107) sets it in tf.data."""
    layer.backend.set_backend("tensorflow")
    try:
        transformation = layer.get_random_transformation({"images": images}, training=True)
        if masks is not None:
            masks = layer.transform_segmentation_masks(masks, transformation, training=True)
        images = layer.transform_images(images, transformation, training=True)
        boxes = layer.transform_bounding_boxes({"boxes": boxes, "labels": classes}, transformation, training=True)
    finally:
        layer.backend.reset()
    return images, boxes["boxes"], boxes["labels"], masks


def augmentation(name, image_size=None, seed=0):
    """Box-aware augmentation for `batches`: none, flip (horizontal), flip_scale (horizontal flip,
    zoom out to 1/1.3, shift up to 10%, zoom in up to 1/0.6 with cropping). image_size, when given,
    is checked against the batches it meets."""
    return BoxAugmentation(name, image_size, seed)


def drop_degenerate(boxes, classes):
    """Padding and boxes under 1 pixel wide or high (after clipping) get class -1 and a zero box."""
    valid = (classes >= 0) & (boxes[..., 2] - boxes[..., 0] >= 1) & (boxes[..., 3] - boxes[..., 1] >= 1)
    valid &= tf.reduce_all(tf.math.is_finite(boxes), axis=-1)
    return tf.where(valid[..., None], boxes, 0.0), tf.where(valid, classes, -1)


def batches(dataset, batch_size, max_objects=16, shuffle=False, augment=None, seed=0, shuffle_buffer=10_000):
    """Shuffles (train only), pads objects, batches, augments per batch, prefetches.

    Yields (images float32 (B, H, W, C) raw 0..255, {"boxes": (B, max_objects, 4) float32 xyxy
    pixels, "classes": (B, max_objects) int32}) plus every mask the dataset has ((B, H, W, 1)
    uint8) in the targets. Rows without an object have class -1 and a zero box; they can sit
    anywhere (augmentation drops boxes in place). An image with more than max_objects objects keeps
    its first max_objects. augment: None, a name (see `augmentation`) or an `augmentation(...)`."""
    if isinstance(augment, str):
        augment = augmentation(augment, seed=seed)
    masks = [key for key in MASK_KEYS if key in dataset.element_spec]
    if shuffle:
        dataset = dataset.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)

    def pad(example):
        boxes, classes = example["boxes"][:max_objects], example["classes"][:max_objects]
        missing = max_objects - tf.shape(classes)[0]
        out = {
            "images": tf.cast(example["image"], tf.float32),
            "boxes": tf.ensure_shape(tf.pad(boxes, [[0, missing], [0, 0]]), (max_objects, 4)),
            "classes": tf.ensure_shape(tf.pad(classes, [[0, missing]], constant_values=-1), (max_objects,)),
        }
        out.update({key: example[key] for key in masks})
        return out

    def finish(batch):
        if augment is not None:
            batch = augment(batch)
        boxes, classes = drop_degenerate(batch["boxes"], batch["classes"])
        targets = {"boxes": boxes, "classes": classes}
        targets.update({key: batch[key] for key in masks})
        return batch["images"], targets

    dataset = dataset.map(pad, num_parallel_calls=AUTOTUNE).batch(batch_size)
    return prefetched(dataset.map(finish, num_parallel_calls=AUTOTUNE))
