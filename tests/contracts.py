"""Shared test contracts, as KerasHub's TestCase.run_backbone_test / run_task_test: what every registered
backbone (vision, text, graph) and every registered task must do, checked the same way for each. The
tests for one kind call these with their own small data and the parts that differ (which output a head
reads, which optimiser trains it)."""

import pathlib
import tempfile

import keras
import numpy as np
import pytest

from tests.conftest import margin
from toolkit.export import litert


def keras_inputs(model):
    """keras.Input tensors like `model`'s inputs: one tensor, or a dict by name for several."""
    found = {t.name: keras.Input(t.shape[1:], dtype=t.dtype, name=t.name) for t in model.inputs}
    return found if len(found) > 1 else next(iter(found.values()))


def litert_matches(got, expected, relative=1e-5):
    """Whether some LiteRT output has `expected`'s shape and matches it within 1e-4 plus `relative` of the
    tensor's own range (raw features reach ~200, and XNNPACK sums in another order)."""
    tolerance = 1e-4 + relative * np.abs(expected).max()
    return any(v.shape == expected.shape and np.allclose(v, expected, rtol=0, atol=tolerance) for v in got.values())


def run_backbone_contract(model, x, y, key, head, tmp_path, optimizer, epochs, loss_bar, batch_size=16):
    """The backbone contract on data (x, y); returns the model's outputs on x.

    1. Raw inputs in, finite and non-constant features out (output `key`).
    2. Config round-trip and .keras save/load in safe_mode give the same `key` output.
    3. A short fit of `head` (features dict -> class probabilities) lowers the loss to at most `loss_bar`
       of its first epoch (trivial: 1.0) and changes the backbone's weights (gradients reach it).
    4. Its LiteRT file, builtin ops only, runs on the stock interpreter and matches Keras on `key`."""
    out = model.predict(x, verbose=0)
    assert np.isfinite(out[key]).all() and out[key].std() > 0, key

    clone = keras.Model.from_config(model.get_config())
    clone.set_weights(model.get_weights())
    np.testing.assert_allclose(clone.predict(x, verbose=0)[key], out[key], atol=1e-5)
    model.save(tmp_path / "backbone.keras")
    loaded = keras.saving.load_model(tmp_path / "backbone.keras", safe_mode=True)
    np.testing.assert_allclose(loaded.predict(x, verbose=0)[key], out[key], atol=1e-5)

    inputs = keras_inputs(model)
    classifier = keras.Model(inputs, head(model(inputs)))
    classifier.compile(optimizer, "sparse_categorical_crossentropy")
    before = [w.copy() for w in model.get_weights()]
    loss = classifier.fit(x, y, batch_size=batch_size, epochs=epochs, verbose=0).history["loss"]
    margin("loss last/first epoch", loss[-1] / loss[0], loss_bar, trivial=1.0, higher=False)
    assert any(not np.allclose(a, b) for a, b in zip(before, model.get_weights())), "the backbone did not train"

    litert.export_saved_model(model, str(tmp_path / "saved_model"))
    (tmp_path / "model.tflite").write_bytes(litert.convert(str(tmp_path / "saved_model")))
    got = litert.LiteRTModel(str(tmp_path / "model.tflite"))(x)
    expected = model.predict(x, verbose=0)
    assert litert_matches(got, expected[key]), f"no LiteRT output matches {key} ({sorted(got)})"
    return expected, got


def _outputs(model, x):
    out = model.predict(x, verbose=0)
    return out if isinstance(out, dict) else {"output": out}


def check_model_round_trip(model, x, tmp_path, atol=1e-5):
    """A task model's config round-trip and its .keras file, loaded by toolkit.saving in safe_mode (the
    registered layers resolve without custom_objects, and the optimiser state comes back), give the
    model's own outputs on x. Returns the loaded model."""
    from toolkit import saving

    expected = _outputs(model, x)
    clone = keras.Model.from_config(model.get_config())
    clone.set_weights(model.get_weights())
    path = tmp_path / f"{model.name}.keras"
    model.save(path)
    loaded = saving.load_model(str(path))
    for copy in (clone, loaded):
        got = _outputs(copy, x)
        assert sorted(got) == sorted(expected)
        for key in expected:
            np.testing.assert_allclose(got[key], expected[key], atol=atol, err_msg=key)
    assert loaded.optimizer is not None and len(loaded.optimizer.variables) == len(model.optimizer.variables)
    return loaded


def run_task_contract(task, model, train, test, calibration, run_dir, epochs=4, batch_size=16, metric_atol=1e-3,
                      after_fit=None, **inference_options):  # fmt: skip
    """The task contract for a model that `toolkit.tasks.get(task).build` made and its `compile` compiled:

    1. model.fit on train = (x, y[, sample_weight]) gives a finite loss in every epoch (then after_fit(model), if given).
    2. check_model_round_trip: config and .keras file give the same outputs.
    3. The task's inference model (post-processing inside) goes through the shared export path
       (pipeline.finish_run, what recipes and toolkit.export_model run): every one of the task's LiteRT
       formats is written, scored with the task's metric on test = (x, labels) and finite, and LiteRT
       fp32 scores what Keras scores (within metric_atol).
    Returns (fit history, per-format rows, the Keras outputs on the test inputs)."""
    from toolkit import tasks
    from toolkit.export import pipeline

    spec = tasks.get(task)
    assert not spec.is_decoder, f"{task}: decoders are verified through their decoding loop (their recipe tests)"
    x, y, *weights = train
    history = model.fit(x, y, sample_weight=weights[0] if weights else None, batch_size=batch_size, epochs=epochs,
                        verbose=0).history  # fmt: skip
    assert np.isfinite(history["loss"]).all(), history["loss"]
    if after_fit is not None:
        after_fit(model)
    sample = {k: v[:4] for k, v in test[0].items()} if isinstance(test[0], dict) else test[0][:4]
    with tempfile.TemporaryDirectory() as scratch:
        check_model_round_trip(model, sample, pathlib.Path(scratch))
    exported = spec.inference_model(model, **inference_options)
    pathlib.Path(run_dir).mkdir(parents=True, exist_ok=True)
    formats, outputs = pipeline.finish_run(str(run_dir), exported, spec.name, *test, calibration)
    for fmt in ("keras", "saved_model", *spec.litert_formats):
        assert spec.metric in formats[fmt], (fmt, formats[fmt])
        assert np.isfinite(formats[fmt][spec.metric]), (fmt, formats[fmt])  # finish_run refuses non-finite outputs
    assert formats["tflite_fp32"][spec.metric] == pytest.approx(formats["keras"][spec.metric], abs=metric_atol)
    return history, formats, outputs


def zeros_like_inputs(model, batch=2):
    """Zero inputs of every shape and dtype `model` takes (token id 0 is padding): one array or a dict."""
    found = {t.name: np.zeros((batch, *t.shape[1:]), t.dtype) for t in model.inputs}
    return found if len(found) > 1 else next(iter(found.values()))


def run_decoder_contract(task, model, x, tmp_path):
    """The task contract for a decoder's training model (trained by its recipe): config and .keras
    round-trips give the same outputs on x, and `parts` gives every part the spec names, each a Keras
    model with finite outputs. Its LiteRT parts and decoding loop are verified by the recipe (the
    recipe tests check LiteRT greedy decoding against Keras)."""
    from toolkit import tasks

    spec = tasks.get(task)
    assert spec.is_decoder
    check_model_round_trip(model, x, tmp_path)
    parts = spec.parts(model)
    assert tuple(parts) == spec.part_names, (tuple(parts), spec.part_names)
    for name, part in parts.items():
        outputs = _outputs(part, zeros_like_inputs(part))
        assert all(np.isfinite(v).all() for v in outputs.values()), name
