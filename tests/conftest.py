import os
import subprocess
import sys

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from toolkit.data import fashion_mnist  # noqa: E402
from toolkit.data.idx import write_idx  # noqa: E402


@pytest.fixture(scope="session")
def fashion_small(tmp_path_factory):
    """A real slice of Fashion-MNIST (Debian's files) as IDX files: 2,000 train and 500 test images."""
    if not os.path.isdir(fashion_mnist.DEFAULT_SOURCE):
        pytest.skip("Debian's dataset-fashion-mnist is not installed (make installs it)")
    folder = tmp_path_factory.mktemp("fashion_small")
    for split, count in (("train", 2000), ("test", 500)):
        images, labels = fashion_mnist.read_split(fashion_mnist.DEFAULT_SOURCE, split)
        images_stem, labels_stem = fashion_mnist.FILES[split]
        write_idx(str(folder / f"{images_stem}.gz"), images[:count, ..., 0])
        write_idx(str(folder / labels_stem), labels[:count])
    return str(folder)


@pytest.fixture(scope="session")
def small_images():
    """(images, labels): 64 random 32x32 RGB images whose label is set by their brightest channel."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 120, (64, 32, 32, 3)).astype(np.uint8)
    labels = np.arange(64) % 3
    for i, label in enumerate(labels):
        images[i, ..., label] += 120
    return images, labels.astype(np.int64)


def run_python(code, backend="tensorflow", timeout=900, env=None):
    """Runs code in a fresh interpreter on a Keras backend (the backend is fixed at import)."""
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3", **(env or {}))
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{backend} subprocess failed:\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
    return done.stdout


def run_cli(*args, backend=None, timeout=900, env=None, **popen):
    """Runs `toolkit ARGS...` as a user would; returns the CompletedProcess. `env` adds variables."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", **(env or {}))
    if backend:
        env["KERAS_BACKEND"] = backend
    return subprocess.run(
        [sys.executable, "-m", "toolkit.cli", *args], env=env, capture_output=True, text=True, timeout=timeout, **popen
    )
