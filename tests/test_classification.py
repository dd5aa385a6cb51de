"""The classification recipe end to end on a real slice of Fashion-MNIST (2,000 train, 500 test)."""

import json
import os

import numpy as np
import pytest
from PIL import Image

from tests.conftest import SEED, cli_fails, cli_in_process, margin, run_cli
from toolkit.data import fashion_mnist
from toolkit.errors import ToolkitError

REPORT_FORMATS = ("keras", "saved_model", "tflite_fp32", "tflite_int8")


@pytest.fixture(scope="module")
def finished_run(fashion_small, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    done = run_cli(
        "run", "classification", "--data", f"fashion_mnist:{fashion_small}",
        "--data-dir", str(out / "tfds"), "--output", str(out), "--epochs", "4", "--verbose", "2",
        "--backbone", "resnet", "--seed", str(SEED),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return out / "classification"


@pytest.mark.slow
@pytest.mark.learned
def test_recipe_learns_and_every_format_verifies(finished_run):
    report = json.loads((finished_run / "report.json").read_text())
    for key in ("recipe", "backend", "metric", "train_seconds", "command", "formats"):
        assert key in report
    assert report["recipe"] == "classification" and report["metric"] == "top1"
    assert tuple(report["formats"]) == REPORT_FORMATS
    for name, fmt in report["formats"].items():
        assert {"top1", "latency_ms", "size_bytes"} <= set(fmt), name
        assert fmt["size_bytes"] > 0 and fmt["latency_ms"] > 0
    keras_top1 = report["formats"]["keras"]["top1"]
    margin("keras top-1", keras_top1, 0.7, trivial=0.1)  # held-out test images; 10 classes
    assert report["formats"]["tflite_fp32"]["max_abs_diff"] <= 1e-4
    assert report["formats"]["saved_model"]["max_abs_diff"] <= 1e-4
    margin("|int8 - keras| top-1", abs(report["formats"]["tflite_int8"]["top1"] - keras_top1), 0.03, higher=False)
    assert report["formats"]["tflite_int8"]["size_bytes"] < 0.5 * report["formats"]["tflite_fp32"]["size_bytes"]
    for name in ("model.keras", "model_fp32.tflite", "model_int8.tflite", "labels.txt", "report.md",
                 "training_curves.png", "confusion_matrix.png", "backbone/model.weights.h5"):  # fmt: skip
        assert (finished_run / name).is_file(), name
    assert (finished_run / "saved_model" / "saved_model.pb").is_file()
    assert "| tflite_int8 |" in (finished_run / "report.md").read_text()


@pytest.mark.slow
def test_predict_reads_the_users_images(finished_run, fashion_small, tmp_path):
    test_images, test_labels = fashion_mnist.read_split(fashion_small, "test")
    files = []
    for i in range(20):
        files.append(str(tmp_path / f"item{i}.png"))
        Image.fromarray(test_images[i, ..., 0]).save(files[-1])
    done = run_cli("predict", "classification", *files, "--run", str(finished_run))
    assert done.returncode == 0, done.stderr
    rows = [line.split("\t") for line in done.stdout.strip().splitlines()]
    assert [r[0] for r in rows] == files
    correct = sum(r[1] == fashion_mnist.CLASS_NAMES[label] for r, label in zip(rows, test_labels[:20]))
    assert correct >= 12
    assert all(0 < float(r[2]) <= 1 for r in rows)
    # a folder, a glob and paths on stdin are the same inputs; --json gives one object per image
    by_folder = cli_in_process("predict", "classification", str(tmp_path), "--run", str(finished_run), "--json")
    assert by_folder.returncode == 0, by_folder.stderr
    records = [json.loads(line) for line in by_folder.stdout.splitlines()]
    assert sorted(r["input"] for r in records) == sorted(files)
    by_name = {r["input"]: r["predictions"][0]["label"] for r in records}
    assert all(by_name[r[0]] == r[1] for r in rows)
    by_glob = cli_in_process("predict", "classification", str(tmp_path / "item1*.png"), "--run", str(finished_run))
    assert len(by_glob.stdout.splitlines()) == 11  # item1, item10..item19
    by_stdin = run_cli("predict", "classification", "-", "--run", str(finished_run), input="\n".join(files[:3]))
    assert [line.split("\t")[0] for line in by_stdin.stdout.splitlines()] == files[:3]
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(open(files[0], "rb").read()[:40])
    done = cli_fails("predict", "classification", str(corrupt), "--run", str(finished_run))
    assert done.returncode == 2 and "corrupt.png: not a readable image" in done.stderr


@pytest.mark.slow
def test_a_preset_whose_weights_do_not_load_keeps_the_old_run(finished_run, fashion_small):
    import shutil

    before = {p: os.path.getmtime(finished_run / p) for p in ("report.json", "model_int8.tflite")}
    bad = finished_run.parent / "broken_preset"
    shutil.copytree(finished_run / "backbone", bad)
    (bad / "model.weights.h5").write_bytes(b"not an h5 file")
    done = cli_fails(
        "run", "classification", "--data", f"fashion_mnist:{fashion_small}",
        "--data-dir", str(finished_run.parent / "tfds"), "--output", str(finished_run.parent), "--epochs", "1",
        "--backbone-preset", str(bad),
    )  # fmt: skip
    assert done.returncode == 2 and "broken_preset/model.weights.h5 does not fit" in done.stderr
    assert before == {p: os.path.getmtime(finished_run / p) for p in before}
    assert not [p for p in os.listdir(finished_run.parent) if p.startswith(".")]


@pytest.mark.slow
def test_a_runs_backbone_preset_loads_into_a_new_task_model(finished_run):
    import keras

    from toolkit import tasks
    from toolkit.backbones import presets
    from toolkit.tasks import classification

    trained = tasks.backbone_of(keras.saving.load_model(finished_run / "model.keras"))
    preset = presets.read(finished_run / "backbone")
    fresh = classification.build(preset.backbone, (28, 28, 1), num_classes=5, **preset.options)  # another head
    backbone = tasks.backbone_of(fresh)
    assert not all(np.allclose(a, b) for a, b in zip(backbone.get_weights(), trained.get_weights()))
    presets.load_weights(backbone, preset)
    for a, b in zip(backbone.get_weights(), trained.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_task_contract(small_images, tmp_path):
    """The shared task contract (tests/contracts.py) on a tiny classifier: fit, config and .keras
    round-trips, every format written and scored, LiteRT fp32 scoring what Keras scores."""
    import keras

    from tests.contracts import run_task_contract
    from toolkit.tasks import classification

    keras.utils.set_random_seed(SEED)
    images, labels = small_images
    model = classification.build("resnet", (32, 32, 3), 3, widths=(8, 8, 16, 16), stem_width=8)
    classification.compile(model, 3e-3, total_steps=8)
    run_task_contract("classification", model, (images[:48], labels[:48]), (images[48:], labels[48:]), images[:16],
                      tmp_path / "run", epochs=2)  # fmt: skip


def test_label_smoothing_is_keras_smoothed_crossentropy_on_integer_labels():
    """The sparse loss the recipe's --label-smoothing uses equals Keras' categorical cross-entropy with
    label_smoothing on one-hot labels, and survives a config round-trip."""
    import keras

    from toolkit.tasks.classification import SmoothedSparseCrossentropy

    rng = np.random.default_rng(0)
    probabilities = rng.dirichlet(np.ones(5), 16).astype("float32")
    labels = rng.integers(0, 5, 16)
    ours = SmoothedSparseCrossentropy(0.1)
    reference = keras.losses.CategoricalCrossentropy(label_smoothing=0.1)
    assert float(ours(labels, probabilities)) == pytest.approx(float(reference(np.eye(5)[labels], probabilities)), rel=1e-5)
    assert float(ours(labels[:, None], probabilities)) == pytest.approx(float(ours(labels, probabilities)), rel=1e-6)
    again = SmoothedSparseCrossentropy.from_config(ours.get_config())
    assert again.smoothing == 0.1


def test_augmentations_are_named_and_keep_the_images_shape():
    import tensorflow as tf

    from toolkit.data import images as image_data

    x = tf.fill((4, 28, 28, 1), 200.0)
    for name in image_data.AUGMENTATIONS:
        y = x
        for layer in image_data.augmentation(name):
            y = layer(y, training=True)
        assert y.shape == x.shape and float(tf.reduce_max(y)) <= 200.0, name
    with pytest.raises(ToolkitError, match="unknown augmentation 'twirl'"):
        image_data.augmentation("twirl")
