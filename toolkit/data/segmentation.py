"""Semantic-segmentation data: one shape for every source, one tf.data pipeline for every recipe.

Sources:
- `scenes[:FOLDER]`: Fashion Scenes (toolkit.data.scenes) through toolkit.data.detection, whose
  `segmentation_mask` holds class + 1 per pixel, 0 = background;
- `folder:PATH`: `PATH/images/*` (8- or 16-bit, PNG, JPEG, TIFF, ...: see toolkit.data.intensity)
  with a mask `PATH/masks/<same stem>.png` (or `.tif`, one channel of ids) each, either an index mask
  (mode L, or a palette PNG whose indices are the class ids, as PASCAL VOC's SegmentationClass
  files are) or an RGB image in the VOC colour palette; 255 is "void" (ignored). Class names come
  from `PATH/classes.txt` (one per line, background first) when present, else are the ids. The
  folder is split deterministically by file name (or uses `PATH/train`, `PATH/test` sub-folders,
  each laid out the same way);
- `tfds:NAME[,classes=N]`: a prepared TFDS dataset with `image` and `segmentation_mask` features.
  Class names come from an `objects/label` feature (then mask value = label + 1, as in our scenes)
  or, with `classes=N`, are the ids 0..N-1;
- `from_arrays` for the Python API.
Each split is an unbatched tf.data dataset of {"image": uint8 (H, W, C) (float32 0..255 from 16-bit
files), "mask": uint8 (H, W, 1)}.
Masks are checked where they are read: a missing file, a size that differs from its image or a
value outside the classes is an error naming the file (or the array index) and the value.
"""

import dataclasses
import os

import numpy as np
import tensorflow as tf

from toolkit.data import images as image_data
from toolkit.data import intensity, local_tfds, prefetched
from toolkit.errors import ToolkitError, choose

AUTOTUNE = tf.data.AUTOTUNE
VOID = 255
MASK_EXTENSION = ".png"
AUGMENTATIONS = ("none", "flip")


@dataclasses.dataclass
class SegmentationData(image_data.ImageSplits):
    """Examples: {"image", "mask" (H, W, 1) uint8 class ids, 255 = void}; class_names[0] is the background."""

    def arrays(self, split):
        """The whole split as (images uint8 (N, H, W, C), masks uint8 (N, H, W))."""
        images, masks = [], []
        for example in getattr(self, split).as_numpy_iterator():
            images.append(example["image"])
            masks.append(example["mask"][..., 0])
        return np.stack(images), np.stack(masks)


def load(source="scenes", data_dir=None, image_size=None, validation_fraction=0.1, test_fraction=0.1,
         scenes_per_epoch=None, seed=0):  # fmt: skip
    """Loads `source` (see the module docstring); image_size resizes images (bilinear) and masks
    (nearest-neighbour, so ids stay ids) to image_size x image_size. The fractions are used where
    the source lacks that split (scenes have all three; TFDS datasets bring their test split).
    scenes_per_epoch: Fashion Scenes composed afresh each epoch (toolkit.data.detection.load; None: the
    default for the source)."""
    image_data.check_fractions(validation_fraction, test_fraction)
    if source == "scenes" or source.startswith("scenes:"):
        from toolkit.data import detection

        return from_detection(detection.load(source, data_dir=data_dir, image_size=image_size,
                                             scenes_per_epoch=scenes_per_epoch, seed=seed))  # fmt: skip
    if scenes_per_epoch:
        raise ToolkitError(f"--scenes-per-epoch composes Fashion Scenes; {source!r} is another data source")
    if source.startswith("tfds:"):
        name, _, option = source[5:].partition(",classes=")
        classes = _positive(option, source) if option else None
        return from_builder(local_tfds.prepared_by_name(name, data_dir), source, classes, image_size,
                            validation_fraction)  # fmt: skip
    if source.startswith("folder:"):
        return load_folder(source[7:], image_size, validation_fraction, test_fraction)
    raise ToolkitError(f"unknown segmentation data source {source!r}; use scenes[:FOLDER], folder:PATH or "
                       "tfds:NAME[,classes=N]")  # fmt: skip


def _positive(text, source):
    if not text.isdigit() or int(text) < 2:
        raise ToolkitError(f"{source}: classes must be an integer of at least 2, got {text!r}")
    return int(text)


def from_detection(data):
    """Segmentation splits from DetectionData whose examples carry a `segmentation_mask` (class + 1)."""
    if "segmentation_mask" not in data.train.element_spec:
        raise ToolkitError(f"{data.source} has no segmentation_mask feature")

    def convert(example):
        return {"image": example["image"], "mask": example["segmentation_mask"]}

    splits = {k: getattr(data, k).map(convert, num_parallel_calls=AUTOTUNE) for k in ("train", "validation", "test")}
    return SegmentationData(**splits, class_names=["background", *data.class_names], image_shape=data.image_shape,
                            source=data.source, sizes=data.sizes, intensity=data.intensity,
                            fresh_train=data.fresh_train)  # fmt: skip


def from_builder(builder, source, num_classes=None, image_size=None, validation_fraction=0.1):
    """A prepared TFDS builder with `image` and `segmentation_mask` features."""
    from toolkit.data import detection

    features = builder.info.features
    if "image" not in features or "segmentation_mask" not in features:
        raise ToolkitError(f"TFDS dataset {builder.info.name!r} has no image and segmentation_mask features")
    if "objects" in features and "label" in features["objects"]:
        class_names = ["background", *features["objects"]["label"].names]
    elif num_classes:
        class_names = [str(c) for c in range(num_classes)]
    else:
        raise ToolkitError(f"{source}: say how many classes its masks hold, e.g. {source},classes=3")
    wanted, sizes = local_tfds.splits(builder, validation_fraction)
    high = len(class_names)

    def convert(example):
        mask = tf.cast(example["segmentation_mask"], tf.uint8)
        bad = tf.logical_and(mask >= high, mask != VOID)
        tf.debugging.assert_equal(tf.reduce_any(bad), False, message=f"{source}: a mask value is outside 0..{high - 1}")
        return {"image": example["image"], "mask": mask}

    ds = {k: builder.as_dataset(split=s).map(convert, num_parallel_calls=AUTOTUNE) for k, s in wanted.items()}
    shape = tuple(features["image"].shape)
    if image_size is None and None in shape[:2]:
        image_size = detection.DEFAULT_IMAGE_SIZE
    data = SegmentationData(ds["train"], ds["validation"], ds["test"], class_names, shape, source, sizes)
    return resized(data, image_size) if image_size and tuple(shape[:2]) != (image_size, image_size) else data


def resized(data, image_size):
    def resize(example):
        image = tf.image.resize(example["image"], (image_size, image_size), antialias=True)
        mask = tf.image.resize(example["mask"], (image_size, image_size), method="nearest")
        return {"image": tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8), "mask": mask}

    return dataclasses.replace(
        data, **{k: getattr(data, k).map(resize, num_parallel_calls=AUTOTUNE) for k in ("train", "validation", "test")},
        image_shape=(image_size, image_size, data.image_shape[2]),
    )  # fmt: skip


def from_arrays(images, masks, class_names, validation_fraction=0.1, test_fraction=0.1, name="arrays"):
    """Validates in-memory images (N, H, W[, C]) and masks (N, H, W[, 1]) and splits them deterministically."""
    images, _ = image_data.check_arrays(images, np.zeros(len(images), np.int64))
    masks = np.asarray(masks)
    if masks.ndim == 4 and masks.shape[-1] == 1:
        masks = masks[..., 0]
    if masks.shape != images.shape[:3]:
        raise ToolkitError(f"masks {masks.shape} must match the images' (N, H, W) {images.shape[:3]}")
    for i, mask in enumerate(masks):
        check_mask_values(mask, len(class_names), f"mask {i}")
    splits = image_data._split_indices(len(images), validation_fraction, test_fraction)
    ds = {k: _dataset(images[idx], masks[idx].astype(np.uint8)[..., None]) for k, idx in splits.items()}
    return SegmentationData(ds["train"], ds["validation"], ds["test"], list(class_names), images.shape[1:], name,
                            {k: len(idx) for k, idx in splits.items()})  # fmt: skip


def _dataset(images, masks):
    return tf.data.Dataset.from_tensor_slices({"image": images, "mask": masks})


def check_mask_values(mask, num_classes, where):
    mask = np.asarray(mask)
    if not np.issubdtype(mask.dtype, np.integer):
        raise ToolkitError(f"{where}: mask values must be integer class ids, got dtype {mask.dtype}")
    bad = mask[(mask != VOID) & ((mask < 0) | (mask >= num_classes))]
    if bad.size:
        raise ToolkitError(f"{where}: mask value {int(bad[0])} is outside the classes 0..{num_classes - 1} "
                           f"(and {VOID} = void)")  # fmt: skip


def voc_palette(count=256):
    """PASCAL VOC's colour map: class id -> (r, g, b), built from the bits of the id."""
    palette = np.zeros((count, 3), np.uint8)
    for c in range(count):
        r = g = b = 0
        cid = c
        for shift in range(7, -1, -1):
            r |= ((cid >> 0) & 1) << shift
            g |= ((cid >> 1) & 1) << shift
            b |= ((cid >> 2) & 1) << shift
            cid >>= 3
        palette[c] = (r, g, b)
    return palette


def read_mask(path, size):
    """A mask PNG as (H, W) uint8 class ids: index masks as they are, RGB masks through the VOC palette."""
    from PIL import Image

    if not os.path.isfile(path):
        raise ToolkitError(f"mask file {path} does not exist (each image needs a mask of the same name)")
    image_data.check_image_file(path)
    if intensity.is_tiff(path):
        mask = intensity.read(path)
        if (mask.shape[1], mask.shape[0]) != size:
            raise ToolkitError(f"{path}: mask is {mask.shape[1]}x{mask.shape[0]} but its image is {size[0]}x{size[1]}")
        if mask.shape[2] != 1:
            raise ToolkitError(f"{path}: a TIFF mask must have one channel of class ids, not {mask.shape[2]}")
        return mask[..., 0].astype(np.int64)
    with Image.open(path) as image:
        if (image.width, image.height) != size:
            raise ToolkitError(f"{path}: mask is {image.width}x{image.height} but its image is {size[0]}x{size[1]}")
        if image.mode in ("L", "P", "I", "I;16"):
            return np.asarray(image, np.int64)  # a palette PNG's indices are the class ids
        rgb = np.asarray(image.convert("RGB"), np.int64)
    codes = voc_palette().astype(np.int64) @ np.array([65536, 256, 1])
    lookup = {int(code): c for c, code in enumerate(codes)}
    flat = rgb @ np.array([65536, 256, 1])
    found = np.unique(flat)
    unknown = [int(v) for v in found if int(v) not in lookup]
    if unknown:
        v = unknown[0]
        raise ToolkitError(f"{path}: colour ({v >> 16}, {(v >> 8) & 255}, {v & 255}) is not in the VOC palette")
    return np.vectorize(lookup.get, otypes=[np.int64])(flat)


def load_folder(path, image_size=None, validation_fraction=0.1, test_fraction=0.1):
    """`path/images` + `path/masks` (see the module docstring). Every mask is read and checked now."""
    from PIL import Image

    image_data.check_fractions(validation_fraction, test_fraction)
    if not os.path.isdir(path):
        raise ToolkitError(f"segmentation folder {path} does not exist")
    if os.path.isdir(os.path.join(path, "train")) and os.path.isdir(os.path.join(path, "test")):
        train, test = _pairs(os.path.join(path, "train")), _pairs(os.path.join(path, "test"))
        validation = [p for p in train if image_data._bucket(p[0]) < validation_fraction]
        train = [p for p in train if image_data._bucket(p[0]) >= validation_fraction]
    else:
        pairs = _pairs(path)
        bucket = {p: image_data._bucket(p[0]) for p in pairs}
        validation = [p for p in pairs if bucket[p] < validation_fraction]
        test = [p for p in pairs if validation_fraction <= bucket[p] < validation_fraction + test_fraction]
        train = [p for p in pairs if bucket[p] >= validation_fraction + test_fraction]
    splits = {"train": train, "validation": validation, "test": test}
    for name, pairs in splits.items():
        if not pairs:
            raise ToolkitError(f"segmentation folder {path}: the {name} split is empty (too few images)")
    names_file = os.path.join(path, "classes.txt")
    class_names = None
    if os.path.isfile(names_file):
        with open(names_file, encoding="utf-8") as f:
            class_names = [line.strip() for line in f if line.strip()]
        if len(class_names) < 2:
            raise ToolkitError(f"{names_file}: needs at least 2 class names (background first)")
    sizes, modes, masks, highest = set(), set(), {}, 0
    for pairs in splits.values():
        for image_file, mask_file in pairs:
            info = image_data.check_image_file(image_file)  # (width, height, mode)
            size = info[:2]
            modes.add(info[2])
            mask = read_mask(mask_file, size)
            if class_names:
                check_mask_values(mask, len(class_names), mask_file)
            real = mask[mask != VOID]
            highest = max(highest, int(real.max()) if real.size else 0)
            sizes.add(size)
            if image_size:  # nearest-neighbour keeps ids ids
                mask = np.asarray(Image.fromarray(mask.astype(np.uint8)).resize((image_size,) * 2, Image.NEAREST))
            masks[mask_file] = mask.astype(np.uint8)
    class_names = class_names or [str(c) for c in range(max(highest, 1) + 1)]
    if image_size is None and len(sizes) > 1:
        a, b = sorted(sizes)[:2]
        raise ToolkitError(f"{path}: images differ in size ({a[0]}x{a[1]}, {b[0]}x{b[1]}, ...); pass image_size")
    channels = 1 if all(m in ("1", "L", "LA", "I", "I;16", "F") for m in modes) else 3
    width, height = sizes.pop() if image_size is None else (image_size, image_size)

    def decode(file, mask):
        image = tf.io.decode_image(tf.io.read_file(file), channels=channels, dtype=tf.uint8, expand_animations=False)
        image.set_shape((None, None, channels))
        if image_size:
            image = tf.image.resize(image, (height, width), antialias=True)
            image = tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)
        return {"image": tf.ensure_shape(image, (height, width, channels)), "mask": mask[..., None]}

    def dataset(pairs):
        stacked = np.stack([masks[m] for _, m in pairs])
        if pixels is not None:
            return _dataset(np.stack([pixels[f] for f, _ in pairs]), stacked[..., None])
        return tf.data.Dataset.from_tensor_slices(([f for f, _ in pairs], stacked)).map(decode, AUTOTUNE)

    rule, pixels, every = None, None, [f for v in splits.values() for f, _ in v]
    if any(intensity.needs_numpy(f) for f in every):  # TIFF or 16-bit PNG: read now (see toolkit.data.intensity)
        pixels, rule = intensity.load_images(every, [f for f, _ in splits["train"]], channels,
                                             (height, width) if image_size else None)  # fmt: skip
    ds = {k: dataset(v) for k, v in splits.items()}
    return SegmentationData(ds["train"], ds["validation"], ds["test"], class_names, (height, width, channels),
                            f"folder:{path}", {k: len(v) for k, v in splits.items()}, intensity=rule)  # fmt: skip


def _pairs(path):
    """[(image file, mask file)] under path/images and path/masks, sorted by name."""
    images_dir, masks_dir = os.path.join(path, "images"), os.path.join(path, "masks")
    for folder in (images_dir, masks_dir):
        if not os.path.isdir(folder):
            raise ToolkitError(f"segmentation folder {path} needs images/ and masks/ sub-folders; {folder} is missing")
    files = image_data.image_files(images_dir)
    return [(f, _mask_file(masks_dir, os.path.splitext(os.path.basename(f))[0])) for f in files]


def _mask_file(masks_dir, stem):
    """masks/<stem>.png, else masks/<stem>.tif or .tiff where that exists (the .png is what a missing mask names)."""
    for extension in (MASK_EXTENSION, *intensity.TIFF_EXTENSIONS):
        if os.path.isfile(os.path.join(masks_dir, stem + extension)):
            return os.path.join(masks_dir, stem + extension)
    return os.path.join(masks_dir, stem + MASK_EXTENSION)


def batches(dataset, batch_size, shuffle=False, augment="none", seed=0, shuffle_buffer=10_000):
    """Yields (images float32 (B, H, W, C) raw 0..255, masks int32 (B, H, W)). augment: none or flip
    (horizontal, the image and its mask together)."""
    choose("augmentation", augment or "none", AUGMENTATIONS)
    if shuffle:
        dataset = dataset.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)

    def finish(batch):
        images, masks = tf.cast(batch["image"], tf.float32), tf.cast(batch["mask"][..., 0], tf.int32)
        if augment == "flip":
            flip = tf.random.uniform((tf.shape(images)[0],), seed=seed) < 0.5
            images = tf.where(flip[:, None, None, None], images[:, :, ::-1], images)
            masks = tf.where(flip[:, None, None], masks[:, :, ::-1], masks)
        return images, masks

    return prefetched(dataset.batch(batch_size).map(finish, num_parallel_calls=AUTOTUNE))
