"""Export formats beyond fp32 / int8 on tiny models: LiteRT int16x8 and ONNX Runtime (issue 19)."""

import numpy as np
import pytest

from toolkit.errors import ToolkitError
from toolkit.export import litert


def _token_model():
    """int32 token ids in, class probabilities out: the shape of a text classifier, whose integer
    input is what the converter's own 16x8 mode cannot calibrate."""
    import keras

    keras.utils.set_random_seed(0)
    tokens = keras.Input((12,), dtype="int32", name="tokens")
    x = keras.layers.Embedding(50, 8)(tokens)
    x = keras.layers.GlobalAveragePooling1D()(x)
    x = keras.layers.Dense(16, activation="relu")(x)
    return keras.Model(tokens, keras.layers.Dense(3, activation="softmax")(x))


def _ops_and_types(path):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=path)
    ops = interpreter._get_ops_details()
    types = {interpreter._get_tensor_details(o["outputs"][0], 0)["dtype"] for o in ops if o["outputs"].size}
    return {o["op_name"] for o in ops}, types


def test_int16x8_converts_a_token_model_and_stays_close_to_keras(tmp_path):
    model = _token_model()
    rng = np.random.default_rng(0)
    train, test = rng.integers(0, 50, (64, 12), dtype=np.int32), rng.integers(0, 50, (32, 12), dtype=np.int32)
    saved = str(tmp_path / "saved_model")
    litert.export_saved_model(model, saved)
    path = str(tmp_path / "model_int16x8.tflite")
    with open(path, "wb") as f:
        f.write(litert.convert(saved, "int16x8", train))
    ops, types = _ops_and_types(path)
    assert np.int16 in types, types  # activations are int16, not float left unquantized
    assert not any(op.startswith("FLEX") or op == "CUSTOM" for op in ops), ops  # builtin ops only
    reference = model.predict(test, verbose=0)
    # int8 weights bound the error (0.003 here); an unquantized or mis-scaled tensor gives 0.1 or more
    assert np.max(np.abs(litert.LiteRTModel(path).predict(test) - reference)) < 0.01


def test_int16x8_of_a_vision_model_whose_pixels_span_0_to_255_runs(tmp_path):
    """Every vision backbone starts with pixels / 127.5 - 1. Calibrated on images holding 0 and 255,
    that ADD's int16 scales are powers of two, and TFLite's power-of-two ADD path refused the file
    ("add.cc: data->input1_shift <= 0 was not true": the classification and segmentation runs'
    int16x8 files, 2026-12-07); the file now asks for the general rescaling. Fails without the fix."""
    import keras

    from toolkit.backbones.registry import normalize

    keras.utils.set_random_seed(0)
    pixels = keras.Input((12, 12, 1), name="image")
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(normalize(pixels))  # same: not folded
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(pixels, keras.layers.Dense(3, activation="softmax")(x))
    rng = np.random.default_rng(0)
    train = rng.integers(0, 256, (32, 12, 12, 1)).astype("float32")
    train[0, 0, 0], train[0, 0, 1] = 0.0, 255.0  # the extremes every Fashion-MNIST batch has
    test = rng.integers(0, 256, (16, 12, 12, 1)).astype("float32")
    saved = str(tmp_path / "saved_model")
    litert.export_saved_model(model, saved)
    path = str(tmp_path / "model_int16x8.tflite")
    with open(path, "wb") as f:
        f.write(litert.convert(saved, "int16x8", train))
    assert np.int16 in _ops_and_types(path)[1]
    # int8 weights bound the error; a refused file raises here, a mis-scaled ADD gives 0.1 or more
    assert np.max(np.abs(litert.LiteRTModel(path).predict(test) - model.predict(test, verbose=0))) < 0.02


def test_int16x8_keeps_float_inputs_and_outputs_that_several_ops_use(tmp_path):
    """A decoder step's shape: a float state read by two ops, an output that another output is made
    from. ai-edge-quantizer 0.10 left such tensors int16 without (de)quantizing them, so floats went in
    as int16 codes and codes came out as floats; litert._float_io puts the float ends back."""
    import keras

    keras.utils.set_random_seed(0)
    state = keras.Input((16,), name="state")
    memory = keras.layers.Dense(16, activation="tanh", name="memory")(state)
    gate = keras.layers.Dense(16, activation="sigmoid")(state)
    mixed = keras.layers.Multiply()([memory, gate])
    keys = keras.layers.Dense(8, name="keys")(memory)
    model = keras.Model(state, {"memory": memory, "keys": keys, "mixed": mixed})
    rng = np.random.default_rng(0)
    train, test = rng.normal(size=(64, 16)).astype("float32"), rng.normal(size=(32, 16)).astype("float32")
    saved = str(tmp_path / "saved_model")
    litert.export_saved_model(model, saved)
    path = str(tmp_path / "model_int16x8.tflite")
    with open(path, "wb") as f:
        f.write(litert.convert(saved, "int16x8", train))
    ops, types = _ops_and_types(path)
    assert np.int16 in types and not any(op.startswith("FLEX") or op == "CUSTOM" for op in ops), (ops, types)
    runtime = litert.LiteRTModel(path)
    details = {**runtime.runner.get_input_details(), **runtime.runner.get_output_details()}
    assert {k: np.dtype(v["dtype"]).name for k, v in details.items()} == dict.fromkeys(
        ("state", "memory", "keys", "mixed"), "float32")  # float I/O, as an app given the file expects
    got, reference = runtime(test), model.predict(test, verbose=0)
    for name in ("memory", "keys", "mixed"):
        # int8 weights bound the error (about 0.01 here); a wrong tensor behind a name is off by far more
        assert np.max(np.abs(got[name] - reference[name])) < 0.05, name


def test_an_int16x8_file_with_its_weights_after_the_flatbuffer_keeps_them_through_the_metadata(tmp_path):
    """ai-edge-quantizer writes a model with 256 KiB or more of weights with its buffers after the
    flatbuffer (offset and size); re-serialising such a file (litert._float_io, the metadata and labels
    packed in) used to drop them, and the interpreter refused the file ("Constant buffer 3 specified an
    out of range offset": the generation step's int16x8 file, 2026-12-07). Before the fix this test
    failed there; the tiny models of the other tests stay under 256 KiB and never took that path."""
    import keras

    from toolkit.export import metadata

    keras.utils.set_random_seed(0)
    inputs = keras.Input((64,), name="features")
    x = keras.layers.Dense(640, activation="relu")(inputs)
    x = keras.layers.Dense(512, activation="relu")(x)  # 368k weights: 360 KiB of int8
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax", name="scores")(x))
    rng = np.random.default_rng(0)
    train, test = rng.normal(size=(64, 64)).astype("float32"), rng.normal(size=(32, 64)).astype("float32")
    saved = str(tmp_path / "saved_model")
    litert.export_saved_model(model, saved)
    converted = litert.convert(saved, "int16x8", train)  # its float I/O fix re-serialises the quantizer's file
    described_by = metadata.model_metadata("m", "d", "1", [metadata.tensor("features")], [metadata.tensor("scores")])
    described = metadata.embed(converted, described_by, {"labels.txt": b"a\nb\nc\n"})
    path = str(tmp_path / "model_int16x8.tflite")
    with open(path, "wb") as f:
        f.write(described)
    assert metadata.read_packed(path) == {"labels.txt": b"a\nb\nc\n"}
    # int8 weights bound the error (about 0.01 here); lost weights give garbage or a refused file
    assert np.max(np.abs(litert.LiteRTModel(path).predict(test) - model.predict(test, verbose=0))) < 0.05


def test_int16x8_without_calibration_samples_is_refused(tmp_path):
    saved = str(tmp_path / "saved_model")
    litert.export_saved_model(_token_model(), saved)
    with pytest.raises(ToolkitError, match="int16x8 export needs calibration samples"):
        litert.convert(saved, "int16x8", None)


def _two_headed_model():
    """Two inputs, two outputs whose names do not sort in their declared order."""
    import keras

    keras.utils.set_random_seed(0)
    image = keras.Input((8, 8, 1), name="image")
    extra = keras.Input((4,), name="extra")
    x = keras.layers.Concatenate()([keras.layers.Flatten()(image), extra])
    x = keras.layers.Dense(16, activation="relu")(x)
    outputs = {"zeta_scores": keras.layers.Dense(3, activation="softmax")(x), "alpha_boxes": keras.layers.Dense(5)(x)}
    return keras.Model({"image": image, "extra": extra}, outputs)


def test_onnx_export_runs_on_onnx_runtime_and_names_outputs_like_keras(tmp_path):
    from toolkit.export import onnx

    model = _two_headed_model()
    rng = np.random.default_rng(0)
    inputs = {"image": rng.random((10, 8, 8, 1), np.float32), "extra": rng.random((10, 4), np.float32)}
    path = str(tmp_path / "model.onnx")
    onnx.export(model, path, {k: v[:1] for k, v in inputs.items()})  # a two-input model takes the dict
    reference = model.predict(inputs, verbose=0)
    runtime = onnx.OnnxModel(path, threads=1, output_names=list(reference))
    outputs = runtime.predict(inputs, batch_size=4)
    assert set(outputs) == {"zeta_scores", "alpha_boxes"}
    for name in reference:
        assert outputs[name].shape == reference[name].shape, name
        assert np.max(np.abs(outputs[name] - reference[name])) < 1e-5, name
    median, p90 = runtime.latency_ms({k: v[:1] for k, v in inputs.items()})
    assert 0 < median <= p90
    with pytest.raises(ToolkitError, match="takes several inputs"):
        runtime(inputs["image"])


def test_onnx_without_its_packages_says_what_to_install(monkeypatch, tmp_path):
    import importlib.util

    from toolkit.export import onnx

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tf2onnx" else real(name, *a))
    with pytest.raises(ToolkitError, match="tf2onnx not installed: pip install"):
        onnx.export(_two_headed_model(), str(tmp_path / "m.onnx"), {})


def test_predict_auto_picks_the_fastest_format_within_a_point_of_keras(tmp_path):
    import json

    from toolkit import predict

    rows = {
        "keras": {"status": "passed", "latency_ms": 1.0},
        "tflite_fp32": {"status": "passed", "latency_ms": 0.40, "drop_points": 0.0},
        "tflite_int8": {"status": "passed", "latency_ms": 0.05, "drop_points": 3.2},  # fastest, but not accurate
        "tflite_dynamic": {"status": "passed", "latency_ms": 0.20, "drop_points": 0.4},
        "tflite_int16x8": {"status": "failed to export: no", "latency_ms": 0.01},
        "onnx": {"status": "passed", "latency_ms": 0.10, "drop_points": 0.0},  # toolkit predict runs LiteRT
    }
    for name in ("model_fp32.tflite", "model_int8.tflite", "model_dynamic.tflite"):
        (tmp_path / name).write_bytes(b"")
    assert predict.resolve_format(str(tmp_path), "auto", "tflite_int8") == "tflite_int8"  # never benchmarked
    (tmp_path / "benchmark.json").write_text(json.dumps({"formats": rows}))
    assert predict.resolve_format(str(tmp_path), "auto", "tflite_int8") == "tflite_dynamic"
    assert predict.resolve_format(str(tmp_path), "tflite_int8", "tflite_fp32") == "tflite_int8"  # asked for
    (tmp_path / "model_dynamic.tflite").unlink()  # a file that is gone is not chosen
    assert predict.resolve_format(str(tmp_path), "auto", "tflite_int8") == "tflite_fp32"
    (tmp_path / "benchmark.json").write_text("[1, 2]")
    with pytest.raises(ToolkitError, match="benchmark.json is not a toolkit benchmark result"):
        predict.resolve_format(str(tmp_path), "auto", "tflite_int8")


def test_a_file_the_interpreter_cannot_run_is_probed_in_a_child_process(tmp_path):
    """litert.probe invokes a file once in a child process, so a file the interpreter cannot load or
    that aborts it (as the pointer language model's full-int8 step did) becomes an error naming the
    file, and a benchmark row, instead of ending the benchmark's own process."""
    import keras

    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    saved = str(tmp_path / "saved_model")
    litert.export_saved_model(model, saved)
    good = tmp_path / "good.tflite"
    good.write_bytes(litert.convert(saved, "fp32"))
    litert.probe(str(good))  # runs: no error
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(good.read_bytes()[:100])
    # what the child said last comes with it
    with pytest.raises(ToolkitError, match=r"cannot run bad\.tflite \(exit 1 on its first invoke: \w+Error: .+\)"):
        litert.probe(str(bad))
