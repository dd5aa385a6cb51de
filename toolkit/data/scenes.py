"""Fashion Scenes: detection and segmentation scenes composed from real Fashion-MNIST items.

Each scene is a 128x128 grey canvas (flat, gradient or smooth-texture background, low contrast)
holding 1-6 Fashion-MNIST items, each resized (aspect kept, longer side 24..64 px) and pasted with
its own foreground mask (pixels above FOREGROUND) at a random place fully inside the canvas. Items
may overlap a little, but a placement is rejected when its box IoU with an earlier box exceeds
MAX_IOU or when it would leave an earlier item with less than MIN_VISIBLE of its pixels.

Because we paste the items ourselves the labels are exact: an item's box is the tight box of its
full foreground mask (occluded parts included, as in COCO), `segmentation_mask` holds class id + 1
of the item visible at each pixel (0 = background) and `instance_mask` holds object index + 1.
The layout is TFDS's standard detection layout (`objects/bbox` normalised ymin, xmin, ymax, xmax
and `objects/label`), so `toolkit.data.detection` reads these scenes and `tfds:` datasets alike.

Items never cross splits: train scenes use Fashion-MNIST train[:54000] (the first 90% of the train
file), validation scenes train[54000:], test scenes the Fashion-MNIST test file. Every split has a fixed seed, so the same
files always give the same scenes.
"""

import functools
import os

import numpy as np
import tensorflow_datasets as tfds

from toolkit.data import fashion_mnist, local_tfds
from toolkit.errors import ToolkitError

CANVAS = 128
FOREGROUND = 10  # Fashion-MNIST items are bright on black; darker pixels are the item's background.
MAX_IOU = 0.3
MIN_VISIBLE = 0.6
SIZES = {"train": 8000, "validation": 1000, "test": 1000}
SEEDS = {"train": 1, "validation": 2, "test": 3}
TRAIN_FRACTION = 0.9  # train scenes use the first 90% of Fashion-MNIST train (54,000), validation the rest


def background(rng, canvas=CANVAS):
    """A low-contrast grey background: flat, a linear gradient, or smooth noise (texture)."""
    kind = rng.integers(3)
    if kind == 0:
        image = np.full((canvas, canvas), rng.uniform(0, 90))
    elif kind == 1:
        angle = rng.uniform(0, 2 * np.pi)
        ys, xs = np.mgrid[0:canvas, 0:canvas] / (canvas - 1)
        ramp = xs * np.cos(angle) + ys * np.sin(angle)
        ramp = (ramp - ramp.min()) / (ramp.max() - ramp.min())
        start, end = rng.uniform(0, 90, size=2)
        image = start + (end - start) * ramp
    else:
        from PIL import Image

        cells = int(rng.integers(3, 17))
        coarse = rng.uniform(-1, 1, (cells, cells)).astype(np.float32)
        smooth = np.asarray(Image.fromarray(coarse, mode="F").resize((canvas, canvas), Image.BICUBIC))
        image = rng.uniform(15, 75) + rng.uniform(8, 25) * smooth / max(np.abs(smooth).max(), 1e-6)
    return image + rng.normal(0, rng.uniform(0, 4), image.shape)


def _resized_item(item, side):
    """The item cropped to its foreground, resized (aspect kept) so its longer side is `side`."""
    from PIL import Image

    mask = item > FOREGROUND
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    crop = item[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    scale = side / max(crop.shape)
    height, width = max(1, round(crop.shape[0] * scale)), max(1, round(crop.shape[1] * scale))
    resized = np.asarray(Image.fromarray(crop).resize((width, height), Image.LANCZOS))
    mask = resized > FOREGROUND
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    # Resampling can fade a thin edge below FOREGROUND: crop again so the box stays tight.
    return resized[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1], mask[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def _iou(box, boxes):
    if not len(boxes):
        return np.zeros(0)
    boxes = np.asarray(boxes, np.float64)
    width = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
    height = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
    inter = width * height
    area = lambda b: (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    return inter / (area(np.asarray(box, np.float64)) + area(boxes) - inter)


def compose_scene(
    rng, items, labels, canvas=CANVAS, min_objects=1, max_objects=6, min_side=24, max_side=64,
    max_iou=MAX_IOU, min_visible=MIN_VISIBLE, tries=30, return_items=False,
):  # fmt: skip
    """Composes one scene from items drawn with `rng` (a numpy Generator) out of `items`.

    items: (N, h, w) or (N, h, w, 1) uint8, bright on black; labels: (N,) class ids.
    Returns (image (canvas, canvas, 1) uint8, boxes (n, 4) float32 xyxy in pixel edges - the tight
    box of each item's full foreground mask, so x_max is the last column + 1 -, classes (n,) int32,
    segmentation_mask (canvas, canvas, 1) uint8 (class + 1 of the visible item, 0 = background),
    instance_mask (canvas, canvas, 1) uint8 (object index + 1 of the visible item, 0 = background)),
    plus item_indices (n,) int64 - the rows of `items` used - with return_items=True. An item that finds no place in `tries`
    attempts is left out; the first always fits, so n >= 1 when min_objects >= 1.
    """
    items = np.asarray(items)
    if items.ndim == 4:
        items = items[..., 0]
    wanted = int(rng.integers(min_objects, max_objects + 1))
    image = background(rng, canvas)
    instance = np.zeros((canvas, canvas), np.uint8)
    boxes, classes, used, areas = [], [], [], []
    for _ in range(wanted):
        index = int(rng.integers(len(items)))
        if not (items[index] > FOREGROUND).any():
            continue  # a blank item has no box
        pixels, mask = _resized_item(items[index], int(rng.integers(min_side, max_side + 1)))
        height, width = mask.shape
        visible = np.bincount(instance.ravel(), minlength=len(boxes) + 1)[1:]
        for _ in range(tries):
            y, x = int(rng.integers(canvas - height + 1)), int(rng.integers(canvas - width + 1))
            box = (x, y, x + width, y + height)
            if (_iou(box, boxes) > max_iou).any():
                continue
            covered = np.bincount(instance[y : y + height, x : x + width][mask], minlength=len(boxes) + 1)[1:]
            if len(boxes) and ((visible - covered) < min_visible * np.asarray(areas)).any():
                continue
            region = image[y : y + height, x : x + width]
            region[mask] = pixels[mask]
            instance[y : y + height, x : x + width][mask] = len(boxes) + 1
            boxes.append(box)
            classes.append(int(labels[index]))
            used.append(index)
            areas.append(int(mask.sum()))
            break
    image = np.clip(np.round(image), 0, 255).astype(np.uint8)[..., None]
    classes = np.asarray(classes, np.int32)
    lookup = np.concatenate([[0], classes + 1]).astype(np.uint8)
    scene = (
        image,
        np.asarray(boxes, np.float32).reshape(-1, 4),
        classes,
        lookup[instance][..., None],
        instance[..., None],
    )
    return scene + (np.asarray(used, np.int64),) if return_items else scene


class ScenesConfig(tfds.core.BuilderConfig):
    """How many scenes each split holds (the default config: 8000 / 1000 / 1000)."""

    def __init__(self, sizes=None, **kwargs):
        sizes = dict(sizes or SIZES)
        name = "default" if sizes == SIZES else f"train{sizes['train']}_val{sizes['validation']}_test{sizes['test']}"
        super().__init__(name=kwargs.pop("name", name), **kwargs)
        self.sizes = sizes


class FashionScenes(tfds.core.GeneratorBasedBuilder):
    """128x128 grey scenes of 1-6 Fashion-MNIST items with exact boxes, class and instance masks."""

    VERSION = tfds.core.Version("1.0.0")
    BUILDER_CONFIGS = (ScenesConfig(),)
    MANUAL_DOWNLOAD_INSTRUCTIONS = fashion_mnist.HOW_TO_GET

    def _info(self):
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(CANVAS, CANVAS, 1)),
                    "objects": tfds.features.Sequence(
                        {
                            "bbox": tfds.features.BBoxFeature(),
                            "label": tfds.features.ClassLabel(names=fashion_mnist.CLASS_NAMES),
                            # Row of the item in its Fashion-MNIST file (train file for the train and
                            # validation splits, test file for test): shows that splits share no item.
                            "item": np.int64,
                        }
                    ),
                    "segmentation_mask": tfds.features.Image(shape=(CANVAS, CANVAS, 1)),
                    "instance_mask": tfds.features.Image(shape=(CANVAS, CANVAS, 1)),
                }
            ),
        )

    def _split_generators(self, dl_manager):
        folder = str(dl_manager.manual_dir)
        return {split: self._generate_examples(folder, split) for split in SIZES}

    def _generate_examples(self, folder, split):
        items, labels = fashion_mnist.read_split(folder, "test" if split == "test" else "train")
        offset, cut = 0, int(len(items) * TRAIN_FRACTION)
        if split == "train":
            items, labels = items[:cut], labels[:cut]
        elif split == "validation":
            items, labels, offset = items[cut:], labels[cut:], cut
        if not len(items):
            raise ToolkitError(f"{folder}: no Fashion-MNIST items for the {split} scenes (the files hold too few)")
        rng = np.random.default_rng(SEEDS[split])
        for i in range(self.builder_config.sizes[split]):
            image, boxes, classes, segmentation, instance, used = compose_scene(rng, items, labels, return_items=True)
            yield (
                i,
                {
                    "image": _png(image),
                    "objects": {
                        "bbox": (boxes[:, [1, 0, 3, 2]] / CANVAS).astype(np.float32),
                        "label": classes.astype(np.int64),
                        "item": used + offset,
                    },
                    "segmentation_mask": _png(segmentation),
                    "instance_mask": _png(instance),
                },
            )


def _png(array):
    """PNG bytes of a (H, W, 1) uint8 array: PIL encodes about 5x faster than TFDS's own TF graph."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array[..., 0]).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def builder(source_dir=None, data_dir=None, sizes=None):
    """Returns the prepared FashionScenes builder (the first call composes and writes the scenes).

    sizes: scenes per split, e.g. {"train": 64, "validation": 16, "test": 16} (default SIZES); each
    choice is its own TFDS config, so a small build never shadows the full one."""
    source_dir = source_dir or fashion_mnist.DEFAULT_SOURCE
    if not os.path.isdir(source_dir):
        raise ToolkitError(f"Fashion-MNIST folder {source_dir} does not exist: {fashion_mnist.HOW_TO_GET}")
    for images_stem, labels_stem in fashion_mnist.FILES.values():
        fashion_mnist.find_file(source_dir, images_stem), fashion_mnist.find_file(source_dir, labels_stem)
    if sizes is not None and (set(sizes) != set(SIZES) or min(sizes.values()) < 1):
        raise ToolkitError(f"scene sizes must give a positive count for each of {sorted(SIZES)}, got {sizes}")
    # TFDS takes the built-in config by name only; another size is a custom config with its own name.
    config = "default" if sizes in (None, SIZES) else ScenesConfig(sizes)
    return local_tfds.prepared(functools.partial(FashionScenes, config=config), source_dir, data_dir)


def fresh_scenes(items, labels, count, seed, canvas=CANVAS, fresh=True):
    """`count` scenes a pass composed from `items` as the Fashion Scenes are: an unbatched tf.data
    dataset of {"image" (canvas, canvas, 1) uint8, "boxes" (n, 4) float32 xyxy pixels, "classes" (n,)
    int32, "segmentation_mask" and "instance_mask" (canvas, canvas, 1) uint8}, the layout of
    toolkit.data.detection.

    fresh=True: every pass composes new scenes (copy-paste augmentation: every training item, at
    new sizes and places, on new backgrounds), from seeds that tf.data's own random stream draws
    anew each pass (`rerandomize_each_iteration`), so an interrupted run that replays its passes
    (toolkit.training's resume) composes the same scenes again. fresh=False: the same scenes every
    pass. Composition is numpy (about 1 ms a scene), run two at a time beside training."""
    import tensorflow as tf

    items, labels = np.asarray(items), np.asarray(labels)
    if items.ndim == 4:
        items = items[..., 0]

    def compose(scene_seed):
        image, boxes, classes, segmentation, instance = compose_scene(
            np.random.default_rng(int(scene_seed)), items, labels, canvas=canvas
        )
        return image, boxes, classes, segmentation, instance

    if fresh:
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).take(count)
    else:
        seeds = tf.data.Dataset.from_tensor_slices(np.random.default_rng(seed).integers(0, 2**62, count))
    shape = (canvas, canvas, 1)

    def example(scene_seed):
        found = tf.numpy_function(compose, [scene_seed], (tf.uint8, tf.float32, tf.int32, tf.uint8, tf.uint8),
                                  stateful=False)  # fmt: skip
        image, boxes, classes, segmentation, instance = found
        return {
            "image": tf.ensure_shape(image, shape),
            "boxes": tf.ensure_shape(boxes, (None, 4)),
            "classes": tf.ensure_shape(classes, (None,)),
            "segmentation_mask": tf.ensure_shape(segmentation, shape),
            "instance_mask": tf.ensure_shape(instance, shape),
        }

    return seeds.map(example, num_parallel_calls=2, deterministic=True)


def pretraining_scenes(items, labels, count, seed, canvas=CANVAS, fresh=True):
    """fresh_scenes as (image, segmentation_mask) pairs: what dense pretraining reads."""
    return fresh_scenes(items, labels, count, seed, canvas, fresh).map(
        lambda e: (e["image"], e["segmentation_mask"])
    )
