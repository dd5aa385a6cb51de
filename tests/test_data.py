import gzip

import numpy as np
import pytest

from toolkit.data import fashion_mnist, images
from toolkit.data.idx import write_idx
from toolkit.errors import ToolkitError


def test_fashion_mnist_builder_reads_local_idx(fashion_small, tmp_path):
    data = images.load(f"fashion_mnist:{fashion_small}", data_dir=str(tmp_path / "tfds"))
    assert data.sizes == {"train": 1800, "validation": 200, "test": 500}
    assert data.image_shape == (28, 28, 1) and len(data.class_names) == 10
    test_images, test_labels = data.arrays("test")
    expected_images, expected_labels = fashion_mnist.read_split(fashion_small, "test")
    # The test split is exactly the test file's items (TFDS stores them in its own order).
    pairs = sorted(x.tobytes() + bytes([y]) for x, y in zip(test_images, test_labels))
    assert pairs == sorted(x.tobytes() + bytes([y]) for x, y in zip(expected_images, expected_labels))
    train = {x.tobytes() for x, _ in data.train.as_numpy_iterator()}
    assert not train & {x.tobytes() for x, _ in data.validation.as_numpy_iterator()}


def test_missing_dataset_says_how_to_get_it(tmp_path):
    with pytest.raises(ToolkitError, match="apt-get install dataset-fashion-mnist"):
        images.load(f"fashion_mnist:{tmp_path / 'nowhere'}")
    with pytest.raises(ToolkitError, match="train-images-idx3-ubyte.*not found.*apt-get"):
        images.load(f"fashion_mnist:{tmp_path}")


def test_damaged_idx_files_are_named(tmp_path):
    path = str(tmp_path / "train-images-idx3-ubyte.gz")
    write_idx(path, np.zeros((5, 28, 28), np.uint8))
    with gzip.open(path, "rb") as f:
        data = f.read()
    with gzip.open(path, "wb") as f:
        f.write(data[:-100])  # truncated
    with pytest.raises(ToolkitError, match="train-images-idx3-ubyte.gz: IDX header promises"):
        fashion_mnist.read_idx(path)
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x08\x00\x00\x00junk")
    with pytest.raises(ToolkitError, match="bad: not an unsigned-byte IDX file"):
        fashion_mnist.read_idx(str(bad))


def test_unknown_sources_are_refused():
    with pytest.raises(ToolkitError, match="unknown data source 'mnist'.*tfds:NAME"):
        images.load("mnist")
    with pytest.raises(ToolkitError, match="unknown TFDS dataset"):
        images.load("tfds:no_such_dataset_xyz")


def test_tfds_dataset_not_prepared_says_how(tmp_path):
    with pytest.raises(ToolkitError, match="not prepared.*tfds build mnist"):
        images.load("tfds:mnist", data_dir=str(tmp_path))


def test_from_arrays_names_the_bad_item(small_images):
    x, y = small_images
    data = images.from_arrays(x, y, class_names=["r", "g", "b"])
    assert sum(data.sizes.values()) == 64 and data.image_shape == (32, 32, 3)
    with pytest.raises(ToolkitError, match=r"shape \(64, 32\)"):
        images.from_arrays(x[..., 0, 0], y)
    with pytest.raises(ToolkitError, match=r"labels must be \(64,\)"):
        images.from_arrays(x, y[:10])
    nan = x.astype(np.float32)
    nan[7, 0, 0, 0] = np.nan
    with pytest.raises(ToolkitError, match="image 7 has values outside 0..255"):
        images.from_arrays(nan, y)
    wrong = y.copy()
    wrong[5] = 3
    with pytest.raises(ToolkitError, match="label 3 of item 5 is outside 0..2"):
        images.from_arrays(x, wrong, class_names=["r", "g", "b"])
    with pytest.raises(ToolkitError, match="1 or 3"):
        images.from_arrays(np.zeros((4, 8, 8, 2)), np.zeros(4, int))


def _write_folder(root, small_images, per_class=12):
    from PIL import Image

    x, y = small_images
    for label in range(3):
        (root / f"class{label}").mkdir(parents=True)
        for i in np.flatnonzero(y == label)[:per_class]:
            Image.fromarray(x[i]).save(root / f"class{label}" / f"img{i}.png")


def test_image_folder_loads_and_splits_without_overlap(tmp_path, small_images):
    _write_folder(tmp_path, small_images)
    data = images.load(f"folder:{tmp_path}", image_size=16)
    assert data.class_names == ["class0", "class1", "class2"]
    assert data.image_shape == (16, 16, 3) and sum(data.sizes.values()) == 36
    assert all(n > 0 for n in data.sizes.values())
    batch_x, batch_y = next(
        iter(images.batches(data.train, 8, shuffle=True, augment=images.augmentation("flip_shift")))
    )
    assert batch_x.shape == (8, 16, 16, 3) and batch_x.dtype.name == "float32"
    assert float(batch_x.numpy().max()) <= 255.0


def test_corrupt_and_empty_images_are_named(tmp_path, small_images):
    _write_folder(tmp_path, small_images)
    broken = tmp_path / "class1" / "broken.png"
    good = (tmp_path / "class1").iterdir().__next__().read_bytes()
    broken.write_bytes(good[: len(good) // 2])
    with pytest.raises(ToolkitError, match="broken.png: not a readable image"):
        images.load(str(tmp_path))
    broken.write_bytes(b"")
    with pytest.raises(ToolkitError, match="broken.png: not a readable image"):
        images.load(str(tmp_path))


def test_folder_without_classes_is_refused(tmp_path):
    with pytest.raises(ToolkitError, match="one sub-folder per class"):
        images.load(f"folder:{tmp_path}")


def test_unknown_augmentation_is_named():
    with pytest.raises(ToolkitError, match="unknown augmentation 'rotate'"):
        images.augmentation("rotate")


def test_every_training_pipeline_runs_without_tf_data_autotuning():
    """The vision pipelines (and pretraining's) end in `toolkit.data.prefetched`: deleting an iterator
    waits for tf.data's autotuning thread, which sleeps in periods that grow to 60 s, and Keras deletes
    the previous epoch's iterator as each epoch starts; inside model.fit that idled both cores 40-60 s
    in about one epoch of three (benchmarks/RESULTS.md). The batches themselves are unchanged."""
    import tensorflow as tf

    from toolkit.data import detection, segmentation
    from toolkit.tasks import pretraining

    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 255, (6, 32, 32, 1), dtype=np.uint8)
    masks = rng.integers(0, 3, (6, 32, 32, 1), dtype=np.uint8)
    built = {
        "images": images.batches(tf.data.Dataset.from_tensor_slices((pixels, np.arange(6))), 4, shuffle=True),
        "segmentation": segmentation.batches(tf.data.Dataset.from_tensor_slices({"image": pixels, "mask": masks}), 4,
                                             shuffle=True, augment="flip"),  # fmt: skip
        "detection": detection.batches(tf.data.Dataset.from_tensor_slices({
            "image": pixels, "boxes": np.tile([[[2.0, 2.0, 20.0, 20.0]]], (6, 1, 1)).astype(np.float32),
            "classes": np.ones((6, 1), np.int32)}), 4, max_objects=3, shuffle=True, augment="flip"),  # fmt: skip
        "pretraining": pretraining.batches(tf.data.Dataset.from_tensor_slices((pixels, masks)), 4, num_classes=2),
    }
    for name, ds in built.items():
        assert ds.options().autotune.enabled is False, name
        sizes = [len(tf.nest.flatten(batch)[0]) for batch in ds.as_numpy_iterator()]
        assert sizes == [4, 2], (name, sizes)
