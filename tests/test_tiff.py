"""TIFF and 16-bit images in every image path (classification and segmentation folders, COCO,
`toolkit predict`), scaled by the one rule of toolkit.data.intensity, computed on the training split."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf
import tifffile
from PIL import Image

from toolkit.data import detection, images, intensity, segmentation
from toolkit.errors import ToolkitError
from toolkit.runs import INTENSITY_FILE


def _png16(path, pixels):
    """A 16-bit PNG (Pillow writes only 16-bit grey; tf.io writes grey and RGB)."""
    pixels = np.asarray(pixels, np.uint16)
    tf.io.write_file(str(path), tf.io.encode_png(pixels if pixels.ndim == 3 else pixels[..., None]))


def _rule(pixels):
    low, high = np.percentile(np.concatenate([np.ravel(p) for p in pixels]), [0.5, 99.5])
    return low, high


def _scaled(raw, low, high):
    return np.clip((raw.astype(np.float64) - low) / (high - low) * 255, 0, 255)


def test_the_rule_on_hand_figures(tmp_path):
    rule = intensity.compute([np.arange(1001, dtype=np.uint16).reshape(1, 1001, 1)])
    assert (rule["low"], rule["high"]) == (5.0, 995.0)  # the 0.5th and 99.5th percentiles of 0..1000
    got = intensity.apply(rule, np.array([[[0], [5], [500], [995], [1000]]], np.uint16))
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got[0, :, 0], [0, 0, 127.5, 255, 255])
    assert intensity.compute([np.zeros((2, 2, 1), np.uint8)]) is None  # 8-bit: identity
    assert intensity.compute([np.full((2, 2, 1), 7, np.uint16)])["high"] == 8.0  # constant: high = low + 1
    intensity.save(None, str(tmp_path))
    assert not os.listdir(tmp_path)  # the identity writes no file
    intensity.save(rule, str(tmp_path))
    assert intensity.load(str(tmp_path)) == rule == json.loads((tmp_path / INTENSITY_FILE).read_text())


def test_16_bit_tiff_and_png_folder_is_scaled_by_the_training_split_only(tmp_path):
    rng = np.random.default_rng(0)
    raw, train_raw = {}, []
    for c in ("a", "b"):
        (tmp_path / c).mkdir()
        for i in range(12):
            name = f"{c}{i}.tif" if i % 2 else f"{c}{i}.png"
            file = str(tmp_path / c / name)
            train = images._bucket(file) >= 0.2  # the loader's split: 10% validation, 10% test
            # validation and test images are far brighter: had they counted, `high` would be near 60000
            pixels = rng.integers(1000, 5000, (6, 8)) if train else rng.integers(50_000, 60_000, (6, 8))
            if i % 4 == 1:  # some RGB files too
                pixels = np.stack([pixels, pixels + 7, pixels + 11], -1)
            pixels = pixels.astype(np.uint16)
            if name.endswith(".tif"):
                tifffile.imwrite(file, pixels, photometric="rgb" if pixels.ndim == 3 else "minisblack")
            else:
                _png16(file, pixels)
            raw[file] = pixels
            if train:
                train_raw.append(pixels)
    data = images.load(f"folder:{tmp_path}", image_size=6)
    low, high = _rule(train_raw)
    assert data.intensity["kind"] == "percentile" and high < 5100
    assert (data.intensity["low"], data.intensity["high"]) == pytest.approx((low, high))
    assert data.image_shape == (6, 6, 3) and sum(data.sizes.values()) == 24
    x, y = data.arrays("train")
    assert x.dtype == np.float32 and len(x) == data.sizes["train"] == len(train_raw)
    # the expected pixels, resized the same way (6x8 -> 6x6), matched by content
    expected = []
    for pixels in train_raw:
        scaled = _scaled(pixels, low, high).astype(np.float32)
        scaled = np.repeat(scaled[..., None], 3, -1) if scaled.ndim == 2 else scaled
        expected.append(tf.clip_by_value(tf.image.resize(scaled, (6, 6), antialias=True), 0, 255).numpy())
    for image in x:
        assert min(np.abs(image - e).max() for e in expected) < 1e-3
    held_out, _ = data.arrays("test")
    np.testing.assert_array_equal(held_out, 255)  # brighter than the training `high`: clipped
    batch, _ = next(iter(images.batches(data.train, 4)))
    assert batch.dtype == tf.float32 and float(tf.reduce_max(batch)) <= 255


def _old_pipeline(file, size):
    """What load_image_folder did to every file before TIFF support (the lazy tf.io path)."""
    image = tf.io.decode_image(tf.io.read_file(file), channels=3, expand_animations=False)
    image = tf.image.resize(image, (size, size), antialias=True)
    return tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8).numpy()


def test_8_bit_folders_are_as_before_and_store_no_rule(tmp_path, small_images):
    x, y = small_images
    for kind in ("png", "tif"):
        for label in range(3):
            (tmp_path / kind / f"class{label}").mkdir(parents=True)
            for i in np.flatnonzero(y == label)[:12]:
                file = tmp_path / kind / f"class{label}" / f"img{i}.{kind}"
                if kind == "png":
                    Image.fromarray(x[i]).save(file)
                else:
                    tifffile.imwrite(file, x[i], photometric="rgb")
    png = images.load(f"folder:{tmp_path / 'png'}", image_size=16)
    assert png.intensity is None
    for split in ("train", "validation", "test"):
        got, _ = png.arrays(split)
        files = [os.path.join(tmp_path, "png", f"class{c}", f)
                 for c in range(3) for f in sorted(os.listdir(tmp_path / "png" / f"class{c}"))]  # fmt: skip
        bucket = {"train": lambda b: b >= 0.2, "validation": lambda b: b < 0.1, "test": lambda b: 0.1 <= b < 0.2}
        want = [_old_pipeline(f, 16) for f in files if bucket[split](images._bucket(f))]
        assert got.dtype == np.uint8
        np.testing.assert_array_equal(got, np.stack(want))
    # the same pixels as 8-bit TIFFs (read eagerly, through tifffile) give the same uint8 arrays
    tif = images.load(f"folder:{tmp_path / 'tif'}", image_size=16)
    assert tif.intensity is None

    def every(data):
        return sorted(a.tobytes() for s in ("train", "validation", "test") for a in data.arrays(s)[0])

    assert every(tif) == every(png)


def test_16_bit_tiff_segmentation_folder_with_masks(tmp_path):
    rng = np.random.default_rng(1)
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    raw, masks, train_raw = {}, {}, []
    for i in range(30):
        pixels = rng.integers(0, 4096, (16, 16)).astype(np.uint16)  # 12-bit data in 16-bit files
        mask = rng.integers(0, 3, (16, 16)).astype(np.uint8)
        tifffile.imwrite(tmp_path / "images" / f"{i:03d}.tif", pixels)
        if i % 5:
            Image.fromarray(mask).save(tmp_path / "masks" / f"{i:03d}.png")
        else:  # a TIFF mask is read too
            tifffile.imwrite(tmp_path / "masks" / f"{i:03d}.tif", mask)
        raw[pixels[:2, 0].tobytes()], masks[pixels[:2, 0].tobytes()] = pixels, mask
        if images._bucket(str(tmp_path / "images" / f"{i:03d}.tif")) >= 0.2:
            train_raw.append(pixels)
    data = segmentation.load(f"folder:{tmp_path}")
    low, high = _rule(train_raw)
    assert (data.intensity["low"], data.intensity["high"]) == pytest.approx((low, high))
    assert data.image_shape == (16, 16, 1) and data.class_names == ["0", "1", "2"]
    seen = 0
    for split in ("train", "validation", "test"):
        for example in getattr(data, split).as_numpy_iterator():
            image = example["image"][..., 0]
            key = min(raw, key=lambda k: np.abs(_scaled(raw[k], low, high) - image).max())
            np.testing.assert_allclose(image, _scaled(raw[key], low, high), atol=1e-3)
            np.testing.assert_array_equal(example["mask"][..., 0], masks[key])
            seen += 1
    assert seen == 30
    resized = segmentation.load(f"folder:{tmp_path}", image_size=32)
    test_images, test_masks = resized.arrays("test")
    assert test_images.shape[1:] == (32, 32, 1) and test_images.dtype == np.float32 and test_masks.shape[1:] == (32, 32)


def test_coco_json_with_16_bit_rgb_tiff_images(tmp_path):
    rng = np.random.default_rng(2)
    entries, annotations, raw = [], [], {}
    for i in range(6):
        pixels = rng.integers(0, 65536, (30, 40, 3)).astype(np.uint16)
        tifffile.imwrite(tmp_path / f"img{i}.tiff", pixels, photometric="rgb")
        raw[f"img{i}.tiff"] = pixels
        entries.append({"id": 100 + i, "file_name": f"img{i}.tiff", "width": 40, "height": 30})
        annotations.append({"id": i, "image_id": 100 + i, "category_id": 7, "bbox": [2, 3, 10, 5]})
    coco = {"images": entries, "annotations": annotations, "categories": [{"id": 7, "name": "dog"}]}
    (tmp_path / "annotations.json").write_text(json.dumps(coco))
    data = detection.load(f"coco:{tmp_path / 'annotations.json'}", validation_fraction=1 / 6, test_fraction=1 / 6)
    assert data.image_shape == (30, 40, 3) and data.sizes == {"train": 4, "validation": 1, "test": 1}
    order = sorted(raw)  # the loader sorts images by file, then splits them with the shared split
    train = [raw[order[i]] for i in images._split_indices(6, 1 / 6, 1 / 6)["train"]]
    low, high = _rule(train)
    assert (data.intensity["low"], data.intensity["high"]) == pytest.approx((low, high))
    got, truth = data.ground_truth("train")
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, np.stack([_scaled(p, low, high) for p in train]), atol=1e-3)
    np.testing.assert_array_equal(truth[0]["boxes"], [[2, 3, 12, 8]])
    small = detection.load(f"coco:{tmp_path / 'annotations.json'}", image_size=32, validation_fraction=1 / 6,
                           test_fraction=1 / 6)  # fmt: skip
    assert small.ground_truth("test")[0].shape == (1, 32, 32, 3)


def test_predict_read_image_applies_the_stored_rule(tmp_path):
    from toolkit.predict import read_image

    rule = {"kind": "percentile", "bits": 16, "percentiles": [0.5, 99.5], "low": 1000.0, "high": 3000.0}
    run = tmp_path / "run"
    run.mkdir()
    intensity.save(rule, str(run))
    pixels = np.array([[0, 1000, 2000], [2500, 3000, 65535]], np.uint16)
    tifffile.imwrite(tmp_path / "deep.tif", pixels)
    _png16(tmp_path / "deep.png", pixels)
    want = np.array([[0, 0, 127.5], [191.25, 255, 255]], np.float32)
    for name in ("deep.tif", "deep.png"):
        got = read_image(str(tmp_path / name), (2, 3, 1), intensity=str(run))
        assert got.dtype == np.float32 and got.shape == (2, 3, 1)
        np.testing.assert_allclose(got[..., 0], want, atol=1e-3)
    rgb = read_image(str(tmp_path / "deep.tif"), (2, 3, 3), intensity=rule)  # a rule given as it is stored
    np.testing.assert_allclose(rgb, np.repeat(want[..., None], 3, -1), atol=1e-3)
    assert read_image(str(tmp_path / "deep.tif"), (4, 6, 3), intensity=str(run)).shape == (4, 6, 3)
    with pytest.raises(ToolkitError, match=r"deep\.tif: a 16-bit image, but the run has no intensity\.json"):
        read_image(str(tmp_path / "deep.tif"), (2, 3, 1), intensity=str(tmp_path))  # a run without the file
    with pytest.raises(ToolkitError, match=r"deep\.tif: a 16-bit image needs its run's intensity\.json"):
        read_image(str(tmp_path / "deep.tif"), (2, 3, 1))  # neither a run nor a rule
    Image.fromarray(np.full((2, 3), 9, np.uint8)).save(tmp_path / "plain.png")  # 8-bit: as before, no rule
    plain = read_image(str(tmp_path / "plain.png"), (2, 3, 1), intensity=str(run))
    assert plain.dtype == np.uint8 and (plain == 9).all()
