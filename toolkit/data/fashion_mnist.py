"""Fashion-MNIST as a TFDS builder that reads local IDX files instead of downloading.

The files come from Debian's `dataset-fashion-mnist` package (`/usr/share/datasets/fashion-mnist/`)
or any folder holding `train-images-idx3-ubyte[.gz]`, `train-labels-idx1-ubyte[.gz]`,
`t10k-images-idx3-ubyte[.gz]` and `t10k-labels-idx1-ubyte[.gz]`; TFDS's own `fashion_mnist`
builder needs the internet, this one does not.
"""

import gzip
import os

import numpy as np
import tensorflow_datasets as tfds

from toolkit.data import local_tfds
from toolkit.errors import ToolkitError

DEFAULT_SOURCE = "/usr/share/datasets/fashion-mnist"
CLASS_NAMES = [
    "t-shirt/top", "trouser", "pullover", "dress", "coat",
    "sandal", "shirt", "sneaker", "bag", "ankle boot",
]  # fmt: skip
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
HOW_TO_GET = (
    "install Debian's package (apt-get install dataset-fashion-mnist) or pass a folder "
    "holding the four IDX files (train-images-idx3-ubyte[.gz], ...)"
)


def find_file(folder, stem):
    for name in (stem, stem + ".gz"):
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            return path
    raise ToolkitError(f"Fashion-MNIST file {stem}[.gz] not found in {folder}: {HOW_TO_GET}")


def read_idx(path):
    """Reads an IDX file (optionally gzipped) into a uint8 array; a damaged file is named."""
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise ToolkitError(f"{path}: cannot read IDX file ({e})") from None
    if len(data) < 8 or data[0] != 0 or data[1] != 0 or data[2] != 0x08 or not 1 <= data[3] <= 4:
        raise ToolkitError(f"{path}: not an unsigned-byte IDX file (bad magic number)")
    ndim = data[3]
    header = 4 + 4 * ndim
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    expected = header + int(np.prod(dims))
    if len(data) != expected:
        raise ToolkitError(f"{path}: IDX header promises {dims} ({expected} bytes), file has {len(data)}")
    return np.frombuffer(data, np.uint8, offset=header).reshape(dims)


def read_split(folder, split):
    images_stem, labels_stem = FILES[split]
    images_path, labels_path = find_file(folder, images_stem), find_file(folder, labels_stem)
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or labels.ndim != 1:
        raise ToolkitError(f"{images_path}: expected (N, H, W) images and (N,) labels")
    if len(images) != len(labels):
        raise ToolkitError(f"{images_path} has {len(images)} images but {labels_path} has {len(labels)} labels")
    bad = np.flatnonzero(labels >= len(CLASS_NAMES))
    if bad.size:
        raise ToolkitError(f"{labels_path}: label {labels[bad[0]]} at item {bad[0]} is not in 0..9")
    return images[..., None], labels


class FashionMnistLocal(tfds.core.GeneratorBasedBuilder):
    """Fashion-MNIST (Xiao et al. 2017) from local IDX files: 60k train, 10k test, 28x28 grey."""

    VERSION = tfds.core.Version("1.0.0")
    MANUAL_DOWNLOAD_INSTRUCTIONS = HOW_TO_GET

    def _info(self):
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(28, 28, 1)),
                    "label": tfds.features.ClassLabel(names=CLASS_NAMES),
                }
            ),
            supervised_keys=("image", "label"),
        )

    def _split_generators(self, dl_manager):
        folder = str(dl_manager.manual_dir)
        return {split: self._generate_examples(folder, split) for split in FILES}

    def _generate_examples(self, folder, split):
        images, labels = read_split(folder, split)
        for i, (image, label) in enumerate(zip(images, labels)):
            yield i, {"image": image, "label": int(label)}


def builder(source_dir=None, data_dir=None):
    """Returns the prepared builder; the first call converts the IDX files into TFDS records."""
    source_dir = source_dir or DEFAULT_SOURCE
    if not os.path.isdir(source_dir):
        raise ToolkitError(f"Fashion-MNIST folder {source_dir} does not exist: {HOW_TO_GET}")
    for images_stem, labels_stem in FILES.values():
        find_file(source_dir, images_stem), find_file(source_dir, labels_stem)
    return local_tfds.prepared(FashionMnistLocal, source_dir, data_dir)
