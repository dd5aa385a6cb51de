"""Image-classification data: one shape for every source, one tf.data pipeline for every recipe.

Sources: `fashion_mnist[:FOLDER]` (local IDX files through our TFDS builder), `tfds:NAME` (any
prepared TFDS image-classification dataset), `folder:PATH` (one sub-folder per class), and
`from_arrays` for the Python API. Each gives unbatched `(uint8 image, int label)` datasets for
train, validation and test; validation is carved from train when the source has none, so the test
split is only ever used for the final figures.
"""

import dataclasses
import os
import zlib

import numpy as np
import tensorflow as tf

from toolkit.data import intensity, local_tfds, prefetched
from toolkit.errors import ToolkitError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff")
AUTOTUNE = tf.data.AUTOTUNE


@dataclasses.dataclass
class ImageSplits:
    """What every image task's data is: unbatched train / validation / test tf.data splits of uint8
    images (float32 0..255 from 16-bit files, scaled by the rule in `intensity`) and the task's
    labels, with the class names, image shape, source and split sizes. Each task's subclass adds how
    to read a whole split as numpy arrays."""

    train: tf.data.Dataset
    validation: tf.data.Dataset
    test: tf.data.Dataset
    class_names: list
    image_shape: tuple
    source: str
    sizes: dict  # split name -> number of examples
    # 16-bit sources: the scaling rule (toolkit.data.intensity); None = identity. Keyword-only, so that
    # a subclass's own fields keep their places after `sizes`.
    intensity: dict = dataclasses.field(default=None, kw_only=True)
    # The training split is composed afresh, in random order, every pass (Fashion Scenes with
    # scenes_per_epoch): batches need not shuffle it, and a shuffle buffer would stall each pass
    # until it had composed the buffer's worth of scenes.
    fresh_train: bool = dataclasses.field(default=False, kw_only=True)

    def calibration_images(self, count):
        """The first `count` training images as one array (uint8; float32 from 16-bit files): the int8
        files' calibration samples."""
        examples = self.train.take(count).as_numpy_iterator()
        return np.stack([e["image"] if isinstance(e, dict) else e[0] for e in examples])


@dataclasses.dataclass
class ImageClassificationData(ImageSplits):
    def arrays(self, split):
        """The whole split as numpy arrays (images uint8, labels int64)."""
        images, labels = zip(*getattr(self, split).as_numpy_iterator())
        return np.stack(images), np.asarray(labels, np.int64)


def load(source="fashion_mnist", image_size=None, data_dir=None, validation_fraction=0.1, test_fraction=0.1):
    """Loads `source` (see the module docstring) as ImageClassificationData. test_fraction is used only
    by a folder without `train/` and `test/` sub-folders (the other sources have a test split)."""
    check_fractions(validation_fraction, test_fraction)
    if source == "fashion_mnist" or source.startswith("fashion_mnist:"):
        return _fashion_mnist(source.partition(":")[2] or None, data_dir, validation_fraction, image_size)
    if source.startswith("tfds:"):
        return _tfds(source[5:], data_dir, validation_fraction, image_size)
    if source.startswith("folder:") or os.path.isdir(source):
        path = source[7:] if source.startswith("folder:") else source
        return load_image_folder(path, image_size or 224, validation_fraction, test_fraction)
    raise ToolkitError(f"unknown data source {source!r}; use fashion_mnist[:FOLDER], tfds:NAME or folder:PATH")


def from_arrays(images, labels, class_names=None, validation_fraction=0.1, test_fraction=0.1, name="arrays"):
    """Validates in-memory arrays and splits them deterministically into train/validation/test."""
    images, labels = check_arrays(images, labels, class_names)
    num_classes = len(class_names) if class_names else int(labels.max()) + 1
    splits = _split_indices(len(images), validation_fraction, test_fraction)
    ds = {k: tf.data.Dataset.from_tensor_slices((images[i], labels[i])) for k, i in splits.items()}
    return ImageClassificationData(
        ds["train"], ds["validation"], ds["test"],
        list(class_names or [str(c) for c in range(num_classes)]),
        images.shape[1:], name, {k: len(i) for k, i in splits.items()},
    )  # fmt: skip


def check_arrays(images, labels, class_names=None):
    """Images must be (N, H, W, C) with finite values in 0..255 and labels in range; names the item."""
    images, labels = np.asarray(images), np.asarray(labels)
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[-1] not in (1, 3) or 0 in images.shape:
        raise ToolkitError(f"images must be (N, H, W, 1 or 3) and non-empty, got shape {images.shape}")
    if labels.shape != (len(images),):
        raise ToolkitError(f"labels must be ({len(images)},) to match the images, got shape {labels.shape}")
    if images.dtype != np.uint8:
        flat = images.reshape(len(images), -1).astype(np.float64)
        bad = np.flatnonzero(~np.isfinite(flat).all(axis=1) | (flat.min(axis=1) < 0) | (flat.max(axis=1) > 255))
        if bad.size:
            raise ToolkitError(f"image {bad[0]} has values outside 0..255 (or NaN/Inf); images are raw pixels")
        images = np.round(images).astype(np.uint8)
    if not np.issubdtype(labels.dtype, np.integer):
        raise ToolkitError(f"labels must be integers, got dtype {labels.dtype}")
    num_classes = len(class_names) if class_names else None
    bad = np.flatnonzero((labels < 0) | (labels >= (num_classes or np.iinfo(np.int64).max)))
    if bad.size:
        raise ToolkitError(f"label {labels[bad[0]]} of item {bad[0]} is outside 0..{num_classes - 1}")
    return images, labels.astype(np.int64)


def check_fractions(validation_fraction, test_fraction):
    """Split fractions must each lie in [0, 1) and leave some data to train on."""
    for name, value in (("validation", validation_fraction), ("test", test_fraction)):
        if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or not 0 <= value < 1:
            raise ToolkitError(f"the {name} fraction must lie in [0, 1), got {value!r}")
    if validation_fraction + test_fraction >= 1:
        raise ToolkitError(
            f"the validation and test fractions ({validation_fraction:g} + {test_fraction:g}) sum to 1 or more: "
            "nothing is left to train on"
        )


def _split_indices(n, validation_fraction, test_fraction):
    check_fractions(validation_fraction, test_fraction)
    order = np.random.default_rng(0).permutation(n)
    n_val, n_test = int(round(n * validation_fraction)), int(round(n * test_fraction))
    if n - n_val - n_test < 1 or (validation_fraction and not n_val) or (test_fraction and not n_test):
        raise ToolkitError(f"{n} examples are too few to split into train/validation/test")
    return {
        "train": np.sort(order[n_val + n_test :]),
        "validation": np.sort(order[:n_val]),
        "test": np.sort(order[n_val : n_val + n_test]),
    }


def _fashion_mnist(source_dir, data_dir, validation_fraction, image_size):
    """Streams from the prepared TFDS records (files read in order, so batches are as they were when
    whole splits were held in memory): memory stays flat however large the dataset is."""
    from toolkit.data import fashion_mnist

    builder = fashion_mnist.builder(source_dir, data_dir)
    percent = int(round(100 * (1 - validation_fraction)))
    splits = {"train": f"train[:{percent}%]", "validation": f"train[{percent}%:]", "test": "test"}
    ds, sizes = {}, {}
    for name, split in splits.items():
        ds[name] = builder.as_dataset(split=split, as_supervised=True, shuffle_files=False)
        sizes[name] = int(builder.info.splits[split].num_examples)
    data = ImageClassificationData(
        ds["train"], ds["validation"], ds["test"], list(fashion_mnist.CLASS_NAMES), (28, 28, 1),
        f"fashion_mnist:{source_dir or fashion_mnist.DEFAULT_SOURCE}", sizes,
    )  # fmt: skip
    return resized(data, image_size) if image_size and image_size != 28 else data


def _tfds(name, data_dir, validation_fraction, image_size):
    builder = local_tfds.prepared_by_name(name, data_dir)
    features = builder.info.features
    if "label" not in features or "image" not in features:
        raise ToolkitError(f"TFDS dataset {name!r} has no image/label features; it is not image classification")
    wanted, sizes = local_tfds.splits(builder, validation_fraction)
    ds = {k: builder.as_dataset(split=s, as_supervised=True) for k, s in wanted.items()}
    shape = tuple(features["image"].shape)
    data = ImageClassificationData(
        ds["train"], ds["validation"], ds["test"], list(features["label"].names), shape, f"tfds:{name}", sizes
    )
    if image_size is None and None in shape[:2]:
        image_size = 224
    return resized(data, image_size) if image_size else data


def resized(data, image_size):
    """Resizes every split to image_size x image_size (uint8 kept, aspect ratio not)."""

    def resize(image, label):
        image = tf.image.resize(image, (image_size, image_size), antialias=True)
        return tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8), label

    return dataclasses.replace(
        data,
        train=data.train.map(resize, num_parallel_calls=AUTOTUNE),
        validation=data.validation.map(resize, num_parallel_calls=AUTOTUNE),
        test=data.test.map(resize, num_parallel_calls=AUTOTUNE),
        image_shape=(image_size, image_size, data.image_shape[2]),
    )


def load_image_folder(path, image_size=224, validation_fraction=0.1, test_fraction=0.1, channels=3):
    """One sub-folder per class. Uses `train/` and `test/` sub-folders when present, else splits
    every class deterministically by file name. Each image is checked first; a bad one is named."""
    check_fractions(validation_fraction, test_fraction)
    if not os.path.isdir(path):
        raise ToolkitError(f"image folder {path} does not exist")
    if os.path.isdir(os.path.join(path, "train")) and os.path.isdir(os.path.join(path, "test")):
        class_names = _class_folders(os.path.join(path, "train"))
        train_files = _list_images(os.path.join(path, "train"), class_names)
        test_files = _list_images(os.path.join(path, "test"), class_names)
        val_files = [f for f in train_files if _bucket(f[0]) < validation_fraction]
        train_files = [f for f in train_files if _bucket(f[0]) >= validation_fraction]
    else:
        class_names = _class_folders(path)
        files = _list_images(path, class_names)
        train_files = [f for f in files if _bucket(f[0]) >= validation_fraction + test_fraction]
        val_files = [f for f in files if _bucket(f[0]) < validation_fraction]
        test_files = [f for f in files if validation_fraction <= _bucket(f[0]) < validation_fraction + test_fraction]
    splits = {"train": train_files, "validation": val_files, "test": test_files}
    for name, files in splits.items():
        if not files:
            raise ToolkitError(f"image folder {path}: the {name} split is empty (too few images per class)")
    for files in splits.values():
        for file, _ in files:
            check_image_file(file)

    def decode(file, label):
        image = tf.io.decode_image(tf.io.read_file(file), channels=channels, expand_animations=False)
        image = tf.image.resize(image, (image_size, image_size), antialias=True)
        return tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8), label

    def labels(files):
        return np.array([c for _, c in files], np.int64)

    rule, every = None, [f for files in splits.values() for f, _ in files]
    if any(intensity.needs_numpy(f) for f in every):  # TIFF or 16-bit PNG: read now (see toolkit.data.intensity)
        pixels, rule = intensity.load_images(every, [f for f, _ in splits["train"]], channels, (image_size,) * 2)
        ds = {k: tf.data.Dataset.from_tensor_slices((np.stack([pixels[f] for f, _ in v]), labels(v)))
              for k, v in splits.items()}  # fmt: skip
    else:
        ds = {
            k: tf.data.Dataset.from_tensor_slices(([f for f, _ in v], labels(v))).map(decode, AUTOTUNE).cache()
            for k, v in splits.items()
        }
    return ImageClassificationData(
        ds["train"], ds["validation"], ds["test"], class_names, (image_size, image_size, channels),
        f"folder:{path}", {k: len(v) for k, v in splits.items()}, intensity=rule,
    )  # fmt: skip


def check_image_file(path):
    """Opens and fully decodes one image; a truncated, corrupt or empty file raises an error naming it
    (a TIFF also when it is not 8/16-bit grey or RGB). Returns (width, height, Pillow mode name)."""
    from PIL import Image, UnidentifiedImageError

    if intensity.is_tiff(path):  # Pillow reads only some TIFFs (not 16-bit RGB), tifffile reads them all
        return intensity.tiff_info(path)
    try:
        with Image.open(path) as image:
            image.load()
            if image.width == 0 or image.height == 0:
                raise ToolkitError(f"{path}: image has zero size")
            return image.width, image.height, image.mode
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as e:
        raise ToolkitError(f"{path}: not a readable image ({e})") from None


def image_files(folder):
    """The image files directly in `folder`, sorted by name; one clear line when it holds none."""
    files = sorted(f for f in os.listdir(folder) if f.lower().endswith(IMAGE_EXTENSIONS))
    if not files:
        raise ToolkitError(f"{folder} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    return [os.path.join(folder, f) for f in files]


def _class_folders(path):
    names = sorted(d for d in os.listdir(path) if os.path.isdir(os.path.join(path, d)) and not d.startswith("."))
    if len(names) < 2:
        raise ToolkitError(f"image folder {path} needs one sub-folder per class (at least 2), found {names}")
    return names


def _list_images(path, class_names):
    files = []
    for label, name in enumerate(class_names):
        folder = os.path.join(path, name)
        if not os.path.isdir(folder):
            raise ToolkitError(f"class folder {folder} is missing")
        for f in sorted(os.listdir(folder)):
            if f.lower().endswith(IMAGE_EXTENSIONS):
                files.append((os.path.join(folder, f), label))
    if not files:
        raise ToolkitError(f"image folder {path} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    return files


def _bucket(file):
    """A stable number in [0, 1) from the file name: the split never changes as files are added."""
    return zlib.crc32(os.path.basename(file).encode()) / 2**32


AUGMENTATIONS = ("none", "flip", "flip_shift", "flip_shift_erase")


def augmentation(kind):
    """Keras preprocessing layers for tf.data: none, flip, flip_shift (and up to 10% translation),
    flip_shift_erase (and random erasing, Zhong et al. 2017: a random 2-25% of the image blacked out
    in half the images). A list, not a Sequential: each layer switches itself to TensorFlow inside
    tf.data on every backend, a Sequential does not."""
    import keras

    if kind not in AUGMENTATIONS and kind is not None:
        raise ToolkitError(f"unknown augmentation {kind!r}; valid: {', '.join(AUGMENTATIONS)}")
    if kind in (None, "none"):
        return []
    layers = [keras.layers.RandomFlip("horizontal")]
    if kind in ("flip_shift", "flip_shift_erase"):
        layers.append(keras.layers.RandomTranslation(0.1, 0.1, fill_mode="constant"))
    if kind == "flip_shift_erase":
        layers.append(keras.layers.RandomErasing(factor=0.5, scale=(0.02, 0.25), fill_value=0.0, value_range=(0, 255)))
    return layers


def batches(ds, batch_size, shuffle=False, augment=(), seed=0):
    """Shuffles (train only), batches, converts to float pixels, augments per batch, prefetches."""
    if shuffle:
        ds = ds.shuffle(20_000, seed=seed, reshuffle_each_iteration=True)

    def prepare(x, y):
        x = tf.cast(x, tf.float32)
        for layer in augment:
            x = layer(x, training=True)
        return x, y

    return prefetched(ds.batch(batch_size).map(prepare, num_parallel_calls=AUTOTUNE))
