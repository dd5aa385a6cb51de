"""Crashes for real (SIGKILL) in training, in the export and in the swap; the re-run continues.

Tolerance: exact. A resumed run restores every model and optimizer variable, the dropout seed
states, early stopping's state and the data order, so its outputs equal those of an
uninterrupted run bit for bit (same backend, same machine, one process each).
"""

import hashlib
import json
import os
import signal

import numpy as np
import pytest

from tests.conftest import cli_fails, run_cli, run_python
from tests.test_cli import _fails_with

KARATE = ("run", "node_classification", "--data", "karate", "--epochs", "12", "--patience", "50", "--verbose", "0")


def _karate(out, name, *extra, crash=None):
    env = {"TOOLKIT_CRASH_AT": crash} if crash else {}
    return run_cli(*KARATE, "--output", str(out), "--name", name, *extra, env=env)


def _snapshot(folder):
    return {
        os.path.relpath(os.path.join(d, f), folder): hashlib.sha256(open(os.path.join(d, f), "rb").read()).hexdigest()
        for d, _, files in os.walk(folder)
        for f in files
    }


def _state(out, name):
    with open(out / f".{name}.partial" / "resume" / "state.json") as f:
        return json.load(f)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run: what every crashed-and-resumed run must reproduce."""
    out = tmp_path_factory.mktemp("runs")
    done = _karate(out, "reference")
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def _outputs(run):
    with np.load(run / "test_data.npz") as data:
        return data["keras_outputs"]


@pytest.mark.slow
def test_killed_mid_epoch_then_rerun_continues_exactly(reference):
    out = reference
    done = _karate(out, "crashed", crash="train_step:7")  # one step per epoch: killed inside epoch 7
    assert done.returncode == -signal.SIGKILL
    assert not (out / "crashed").exists()
    state = _state(out, "crashed")
    assert state["epoch"] == 6 and len(state["history"]["loss"]) == 6  # every completed epoch kept

    # The same name with other options is refused, naming the option; the state is kept.
    _fails_with(cli_fails(*KARATE, "--output", str(out), "--name", "crashed", "--learning-rate", "0.05"),
                "learning_rate=0.01", "--restart")  # fmt: skip
    assert _state(out, "crashed")["epoch"] == 6

    done = _karate(out, "crashed", "--resume")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resuming from" in done.stdout and "6 completed epoch(s)" in done.stdout
    report = json.loads((out / "crashed" / "report.json").read_text())
    expected = json.loads((out / "reference" / "report.json").read_text())
    assert report["epochs_run"] == expected["epochs_run"] == 12
    np.testing.assert_array_equal(_outputs(out / "crashed"), _outputs(out / "reference"))
    assert report["formats"]["keras"] == {**expected["formats"]["keras"], **_latency(report["formats"]["keras"])}
    assert not (out / ".crashed.partial").exists()  # the state goes once the run is in place

    _fails_with(cli_fails(*KARATE, "--output", str(out), "--name", "crashed", "--resume"),
                "--resume: no interrupted run 'crashed'")  # fmt: skip


def _latency(entry):
    return {k: v for k, v in entry.items() if k.startswith("latency")}


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["export", "export:tflite_fp32", "commit"])
def test_killed_export_leaves_the_previous_run_whole(reference, stage):
    """A re-run of a finished run, killed while exporting or swapping: the old run still loads and verifies."""
    from toolkit import saving
    from toolkit.export.litert import LiteRTModel

    run = reference / "reference"
    before = _snapshot(run)
    done = _karate(reference, "reference", crash=stage)
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    assert _snapshot(run) == before
    with np.load(run / "test_data.npz") as data:
        inputs = {k[len("input__") :]: data[k] for k in data.files if k.startswith("input__")}
        reference_outputs = data["keras_outputs"]
    model = saving.load_model(str(run / "model.keras"))
    np.testing.assert_allclose(model.predict(inputs, verbose=0), reference_outputs, atol=1e-6)
    lite = LiteRTModel(str(run / "model_fp32.tflite"))
    np.testing.assert_allclose(lite.predict(inputs), reference_outputs, atol=1e-4)


@pytest.mark.slow
def test_rerun_after_a_killed_export_does_not_train_again(reference):
    _karate(reference, "reference", crash="export")  # leaves a finished training state behind
    done = _karate(reference, "reference")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resuming from" in done.stdout and "12 completed epoch(s)" in done.stdout
    report = json.loads((reference / "reference" / "report.json").read_text())
    assert report["epochs_run"] == 12
    assert sorted(os.listdir(reference)) == [d for d in sorted(os.listdir(reference)) if not d.endswith(".partial")]


IMAGES = """
import json, sys, numpy as np, keras
from toolkit import training
from toolkit.data import fashion_mnist, images
from toolkit.tasks import classification
keras.utils.set_random_seed(0)
x, y = fashion_mnist.read_split({folder!r}, "train")
data = images.from_arrays(x[:640], y[:640], fashion_mnist.CLASS_NAMES)  # 512 train: 8 full batches of 64
train = images.batches(data.train, 64, shuffle=True)
model = classification.build("resnet", data.image_shape, 10, head_dropout=0.3, widths=(8, 8, 16, 16),
                             depths=(1, 1, 1, 1), stem_width=8)  # tiny: tracing a big graph is most of the time
classification.compile(model, 3e-3, 3 * 8)
history, _ = training.fit(model, train, images.batches(data.validation, 64), 3, {run!r}, patience=5, verbose=0)
print(json.dumps(history))
print(json.dumps([float(np.sum(np.abs(w))) for w in model.get_weights()]))
"""


@pytest.mark.slow
def test_image_recipe_killed_mid_epoch_resumes_with_the_same_batches(fashion_small, tmp_path):
    """Shuffled batches and dropout: the resumed epochs see the batches an uninterrupted run sees."""
    whole = run_python(IMAGES.format(folder=fashion_small, run=str(tmp_path / "whole"))).splitlines()
    code = IMAGES.format(folder=fashion_small, run=str(tmp_path / "crashed"))
    with pytest.raises(AssertionError, match="subprocess failed"):
        run_python(code, env={"TOOLKIT_CRASH_AT": "train_step:11"})  # epoch 2, batch 3
    with open(tmp_path / "crashed" / "resume" / "state.json") as f:
        assert json.load(f)["epoch"] == 1
    resumed = run_python(code).splitlines()
    assert "resuming from" in resumed[0]
    assert json.loads(resumed[-2]) == json.loads(whole[-2])  # history, every epoch, exactly
    assert json.loads(resumed[-1]) == json.loads(whole[-1])  # final weights


def test_a_crash_between_the_state_files_keeps_the_previous_state(tmp_path, monkeypatch):
    """The arrays of epoch 2 are written, state.json is not: the re-run resumes from epoch 1."""
    import keras

    from toolkit import training

    def model():
        keras.utils.set_random_seed(0)
        m = keras.Sequential(
            [keras.Input((4,)), keras.layers.Dense(8), keras.layers.Dropout(0.2), keras.layers.Dense(2)]
        )
        m.compile(keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        return m

    import tensorflow as tf

    x = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
    data = tf.data.Dataset.from_tensor_slices((x, (x[:, 0] > 0).astype("int64"))).batch(16)
    whole, whole_seconds = training.fit(model(), data, data, 4, str(tmp_path / "whole"), verbose=0)

    calls = []

    def crash(name):
        calls.append(name)
        if name == "between_state_files" and len(calls) == 2:
            raise KeyboardInterrupt  # stands in for the kill: the process stops right here

    monkeypatch.setattr(training, "crash_point", crash)
    with pytest.raises(KeyboardInterrupt):
        training.fit(model(), data, data, 4, str(tmp_path / "crashed"), verbose=0)
    assert training.read_state(str(tmp_path / "crashed" / "resume"))["epoch"] == 1
    monkeypatch.undo()
    resumed, _ = training.fit(model(), data, data, 4, str(tmp_path / "crashed"), verbose=0)
    assert resumed == whole
    # a re-run of a finished run trains nothing, and reports the training time the run took
    again, seconds = training.fit(model(), data, data, 4, str(tmp_path / "whole"), verbose=0)
    assert again == whole and seconds >= training.read_state(str(tmp_path / "whole" / "resume"))["seconds"] > 0
    assert seconds >= 0.5 * whole_seconds
