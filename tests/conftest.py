import json
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


TINY_PYRAMID = (
    "--verbose", "0", "--neck-channels", "16", "--head-channels", "16", "--calibration-samples", "16",
    "--backbone-option", "widths=(16,16,32,32)", "--backbone-option", "stem_width=16",
)  # fmt: skip


def run_pyramid_recipe(recipe, output, *flags):
    """`toolkit run RECIPE --output OUTPUT` with a tiny backbone, neck and head (TINY_PYRAMID) and `flags`;
    checks that it exits 0 and returns (its run folder, its report.json)."""
    done = run_cli("run", recipe, "--output", str(output), *TINY_PYRAMID, *flags)
    assert done.returncode == 0, done.stderr[-3000:]
    run = output / recipe
    return run, json.loads((run / "report.json").read_text())


def tiny_scenes(count, seed, canvas=64):
    """Small composed scenes of 1-2 items of three unalike classes (t-shirt, trouser, pullover), 20-32 px:
    (images float32 (N, canvas, canvas, 1), truth [{"boxes", "classes"}], class masks int32 (N, canvas, canvas)).
    seed 0 draws items from Fashion-MNIST's test split, other seeds from its train split (held out from
    each other). Skips when Debian's dataset is not installed."""
    from toolkit.data import scenes

    if not os.path.isdir(fashion_mnist.DEFAULT_SOURCE):
        pytest.skip("Debian's dataset-fashion-mnist is not installed (make installs it)")
    items, labels = fashion_mnist.read_split(fashion_mnist.DEFAULT_SOURCE, "train" if seed else "test")
    keep = labels < 3
    rng = np.random.default_rng(seed)
    made = [
        scenes.compose_scene(rng, items[keep][:3000], labels[keep][:3000], canvas=canvas, max_objects=2,
                             min_side=20, max_side=32)
        for _ in range(count)
    ]  # fmt: skip
    images = np.stack([m[0] for m in made]).astype(np.float32)
    truth = [{"boxes": m[1], "classes": m[2]} for m in made]
    return images, truth, np.stack([m[3][..., 0] for m in made]).astype(np.int32)

