"""Images beyond 8 bits: reading TIFF and 16-bit PNG files, and the one rule that scales them.

The models take raw 0..255 pixels (normalisation is inside the model), so 16-bit intensities must
be mapped to that range the same way in training, in `toolkit predict` and by whoever feeds an
exported model. The rule, computed on the TRAINING split only and stored as the run's
`intensity.json`:

    {"kind": "percentile", "bits": 16, "percentiles": [0.5, 99.5], "low": L, "high": H}

L and H are the 0.5th and 99.5th percentiles (numpy's linear interpolation) of every pixel of every
training image, all channels together; a pixel x becomes clip((x - L) / (H - L) * 255, 0, 255) as
float32, before resizing. Percentiles, not the minimum and maximum: one hot pixel or a dead border
would otherwise squeeze the whole image into a few grey levels. (If H == L, H is taken as L + 1.)
8-bit images keep the identity (no rule, no file, uint8 pixels as before).

A folder that mixes 8-bit and 16-bit images is refused, naming one file of each: the same number
means a different brightness in each, and no one rule is right for both (convert them first).

Reading: TIFF (.tif/.tiff, one page, 8- or 16-bit unsigned, 1 or 3 samples) through tifffile;
16-bit PNG through tf.io.decode_png(dtype=uint16) (Pillow keeps only 8 bits of a 16-bit RGB PNG).
Such files are read eagerly into numpy arrays when the dataset is built, not inside tf.data
through tf.numpy_function: the rule needs every training pixel before the first batch anyway, a
file that cannot be read is named at once (not mid-epoch, from a worker thread), and the datasets
that come as TIFF or 16-bit PNG folders are small. Folders of ordinary 8-bit files keep the lazy
tf.io.decode_image pipeline, unchanged.
"""

import json
import math
import os

import numpy as np

from toolkit.errors import ToolkitError
from toolkit.runs import INTENSITY_FILE, write_atomic

TIFF_EXTENSIONS = (".tif", ".tiff")
PERCENTILES = (0.5, 99.5)


# === Reading files ===
def is_tiff(path):
    return str(path).lower().endswith(TIFF_EXTENSIONS)


def png_bit_depth(path):
    """The bit depth in a PNG's header (8 or 16, ...), or None for a file that is not a PNG."""
    try:
        with open(path, "rb") as f:
            head = f.read(25)
    except OSError:
        return None
    if len(head) < 25 or head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        return None
    return head[24]


def needs_numpy(path):
    """True for the files the tf.io pipeline cannot read as they are: TIFF, and PNG beyond 8 bits."""
    return is_tiff(path) or (png_bit_depth(path) or 8) > 8


def tiff_info(path):
    """(width, height, mode) of a TIFF, fully decoded and checked; mode is a Pillow-like name
    ('L', 'I;16', 'RGB', 'RGB;16') for the loaders' channel count. A bad file is named."""
    image = read(path)
    mode = {(1, 8): "L", (1, 16): "I;16", (3, 8): "RGB", (3, 16): "RGB;16"}[image.shape[2], bits(image)]
    return image.shape[1], image.shape[0], mode


def read(path):
    """One TIFF or 16-bit PNG (any other image through tf.io) as (H, W, 1 or 3) uint8 or uint16.
    A PNG's alpha channel is dropped, as tf.io.decode_image(channels=...) does for 8-bit files."""
    if is_tiff(path):
        return _read_tiff(path)
    import tensorflow as tf

    try:
        data = tf.io.read_file(path)
        if (png_bit_depth(path) or 8) > 8:
            image = tf.io.decode_png(data, channels=0, dtype=tf.uint16).numpy()
        else:
            image = tf.io.decode_image(data, channels=0, expand_animations=False).numpy()
    except (tf.errors.OpError, ValueError) as e:
        message = getattr(e, "message", str(e)).splitlines()[0]
        raise ToolkitError(f"{path}: not a readable image ({message})") from None
    if image.shape[2] in (2, 4):
        image = image[..., :-1]
    return image


def _read_tiff(path):
    import tifffile

    try:
        with tifffile.TiffFile(path) as tiff:
            if len(tiff.pages) != 1:
                raise ToolkitError(f"{path}: a TIFF of {len(tiff.pages)} pages; one image per file is supported")
            page = tiff.pages[0]
            image = page.asarray()
            photometric, samples, planar = int(page.photometric), int(page.samplesperpixel), int(page.planarconfig)
    except ToolkitError:
        raise
    except Exception as e:  # tifffile raises TiffFileError, ValueError, struct.error, ... on damaged files
        message = (str(e).splitlines() or [""])[0]
        raise ToolkitError(f"{path}: not a readable image ({type(e).__name__}: {message})") from None
    if image.dtype not in (np.uint8, np.uint16):
        raise ToolkitError(f"{path}: TIFF pixels are {image.dtype}; only 8- and 16-bit unsigned integer images "
                           "are supported (scale them to uint16 first)")  # fmt: skip
    if samples not in (1, 3):
        raise ToolkitError(f"{path}: a TIFF with {samples} channels; only 1 (grey) or 3 (RGB) are supported")
    if photometric not in (0, 1, 2):  # min-is-white, min-is-black, RGB; not palette, CMYK, YCbCr, ...
        raise ToolkitError(f"{path}: TIFF photometric interpretation {photometric} is not supported (grey or RGB only)")
    if samples == 3 and planar == 2 and image.ndim == 3:
        image = np.moveaxis(image, 0, -1)  # planar ("separate") samples come first
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[2] != samples:
        raise ToolkitError(f"{path}: a TIFF page of shape {image.shape}; want (height, width[, 1 or 3 channels])")
    if photometric == 0:  # min-is-white: 0 is white
        image = np.iinfo(image.dtype).max - image
    if 0 in image.shape:
        raise ToolkitError(f"{path}: image has zero size")
    return image


def bits(image):
    return 16 if image.dtype == np.uint16 else 8


# === The rule ===
def compute(train_images):
    """The rule for these training images (arrays of one dtype): None (identity) for 8-bit ones."""
    train_images = list(train_images)
    if not train_images or all(bits(image) == 8 for image in train_images):
        return None
    pixels = np.concatenate([np.asarray(image).ravel() for image in train_images])
    low, high = (float(v) for v in np.percentile(pixels, PERCENTILES))
    return {"kind": "percentile", "bits": 16, "percentiles": list(PERCENTILES), "low": low,
            "high": high if high > low else low + 1.0}  # fmt: skip


def apply(rule, image):
    """16-bit pixels -> float32 0..255 by the rule; 8-bit images are returned as they are."""
    image = np.asarray(image)
    if bits(image) == 8:
        return image
    if rule is None:
        raise ToolkitError("a 16-bit image needs an intensity rule, and none was given")
    scaled = (image.astype(np.float64) - rule["low"]) / (rule["high"] - rule["low"]) * 255.0
    return np.clip(scaled, 0.0, 255.0).astype(np.float32)


def check(rule, where):
    """The rule as stored, checked; `where` (a file name) names it in the error."""
    if not isinstance(rule, dict) or rule.get("kind") != "percentile":
        raise ToolkitError(f'{where}: not a valid intensity rule (want {{"kind": "percentile", "low": L, "high": H}})')
    values = [rule.get("low"), rule.get("high")]
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values):
        raise ToolkitError(f"{where}: not a valid intensity rule (low and high must be finite numbers, got "
                           f"{values[0]!r} and {values[1]!r})")  # fmt: skip
    if values[1] <= values[0]:
        raise ToolkitError(f"{where}: not a valid intensity rule (high {values[1]!r} must exceed low {values[0]!r})")
    return rule


def save(rule, run_dir):
    """Writes the rule to RUN/intensity.json; the identity (None) writes nothing."""
    if rule is not None:
        write_atomic(os.path.join(run_dir, INTENSITY_FILE), json.dumps(check(rule, INTENSITY_FILE), indent=1) + "\n")


def load(run_dir):
    """The run's rule, or None (identity) when it has no intensity.json; a bad file is named."""
    path = os.path.join(run_dir, INTENSITY_FILE)
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            rule = json.load(f)
    except (OSError, ValueError) as e:  # UnicodeDecodeError is a ValueError
        raise ToolkitError(f"{path}: not a valid intensity rule (not JSON: {e})") from None
    return check(rule, path)


# === Whole datasets ===
def load_images(files, train_files, channels, size=None):
    """Every file read now (see the module docstring): ({file: (H, W, channels) array}, rule).

    The rule comes from `train_files` only; images are scaled, given `channels`, then resized to
    size (height, width) when given, with the same ops as the tf.data pipeline of 8-bit folders
    (so an 8-bit file gives the same uint8 pixels either way); 16-bit ones become float32 0..255."""
    import tensorflow as tf

    raw = {}
    for file in files:
        if needs_numpy(file):
            raw[file] = read(file)
        else:
            image = tf.io.decode_image(tf.io.read_file(file), channels=channels, expand_animations=False)
            raw[file] = image.numpy()
    by_bits = {}
    for file in files:
        by_bits.setdefault(bits(raw[file]), file)
    if len(by_bits) > 1:
        raise ToolkitError(f"{by_bits[16]} is a 16-bit image but {by_bits[8]} is 8-bit: one folder must hold one "
                           "bit depth (convert the 8-bit images to 16-bit, or the other way)")  # fmt: skip
    rule = compute(raw[f] for f in train_files)
    out = {}
    for file, image in raw.items():
        image = to_channels(apply(rule, image), channels)
        out[file] = resize(image, size) if size else image
    return out, rule


def to_channels(image, channels):
    if image.shape[2] == channels:
        return image
    if channels == 3:
        return np.repeat(image, 3, axis=2)
    grey = image.astype(np.float32) @ np.array([0.2989, 0.5870, 0.1140], np.float32)  # ITU-R 601, as tf's
    return (np.round(grey).astype(np.uint8) if image.dtype == np.uint8 else grey)[..., None]


def resize(image, size):
    """(height, width), as the 8-bit pipeline resizes: bilinear with antialiasing; uint8 stays uint8."""
    import tensorflow as tf

    resized = tf.clip_by_value(tf.image.resize(image, size, antialias=True), 0, 255)
    if image.dtype == np.uint8:
        return tf.cast(tf.round(resized), tf.uint8).numpy()
    return resized.numpy().astype(np.float32)
