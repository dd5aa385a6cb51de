"""The same vision backbones and recipe on the jax and torch backends (each in a fresh interpreter);
tests/test_backends_text.py holds the text and graph ones."""

import json

import pytest

from tests.conftest import SEED, margin, run_cli, run_python

BUILD_FIT_PREDICT = """
import numpy as np, keras
from toolkit import backbones
assert keras.backend.backend() == {backend!r}, keras.backend.backend()
keras.utils.set_random_seed({seed})
rng = np.random.default_rng(0)
labels = np.arange(48) % 3
images = rng.integers(0, 120, (48, 32, 32, 3)).astype("float32")
images[np.arange(48), :, :, labels] += 120
for name in backbones.names("vision"):
    model = backbones.get(name, (32, 32, 3))
    inputs = keras.Input((32, 32, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(model(inputs)["P5"])
    classifier = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(pooled))
    # Adam: hub_resnet's raw P5 features reach ~200, where plain SGD at 0.01 can diverge on some inits.
    classifier.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    history = classifier.fit(images, labels, batch_size=16, epochs=3, verbose=0).history["loss"]
    # the training batch size: 48 images in batches of 32 would compile a second, 16-image predict step on JAX
    probabilities = classifier.predict(images, batch_size=16, verbose=0)
    assert probabilities.shape == (48, 3) and np.isfinite(probabilities).all(), name
    print(name, "ok", history[-1] / history[0])
"""


def losses_fall(out, family, bar):
    """The subprocess' "NAME ok RATIO" lines (last/first epoch loss): one for every registered backbone
    of `family`, each ratio at or below `bar`."""
    from toolkit import backbones

    ratios = {line.split()[0]: float(line.split()[2]) for line in out.splitlines() if " ok " in line}
    assert set(ratios) == set(backbones.names(family)), out  # every registered backbone of the family
    for name, ratio in ratios.items():
        margin(f"{name} loss last/first epoch", ratio, bar, trivial=1.0, higher=False)


@pytest.mark.cross_backend
@pytest.mark.learned
@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_every_backbone_builds_fits_and_predicts(backend):
    losses_fall(run_python(BUILD_FIT_PREDICT.format(backend=backend, seed=SEED), backend=backend), "vision", 0.95)


@pytest.mark.cross_backend
@pytest.mark.learned
@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_recipe_trains_and_exports_from_backend(backend, fashion_small, tmp_path):
    """Export goes through the .keras file to a TensorFlow subprocess; parity is against this backend."""
    done = run_cli(
        "run", "classification", "--data", f"fashion_mnist:{fashion_small}", "--data-dir", str(tmp_path / "tfds"),
        "--output", str(tmp_path), "--epochs", "2", "--verbose", "0", "--backbone", "resnet", "--seed", str(SEED),
        backend=backend,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "classification" / "report.json").read_text())
    assert report["backend"] == backend
    formats = report["formats"]
    margin("keras top-1", formats["keras"]["top1"], 0.5, trivial=0.1)  # 10 classes
    assert formats["tflite_fp32"]["max_abs_diff"] <= 1e-4
    margin("|int8 - keras| top-1", abs(formats["tflite_int8"]["top1"] - formats["keras"]["top1"]), 0.05, higher=False)
