"""The shared path from a trained model to a verified run folder, for every task.

    model.keras -> SavedModel -> LiteRT fp32 / int8 -> each verified on the whole test split
    (task metric, max abs diff against Keras, batch-1 latency) -> report.json / report.md

LiteRT conversion needs TensorFlow: on the jax and torch backends the export stage runs in a
TensorFlow-backend subprocess on the saved `.keras` file (`python -m toolkit.export.pipeline`),
comparing against the outputs of the Keras model as trained, on its own backend.
"""

import json
import os
import subprocess
import sys

import numpy as np

from toolkit import tasks
from toolkit.errors import ToolkitError
from toolkit.export import litert, metadata
from toolkit.runs import MODEL_FILE, ONNX_FILE, SAVED_MODEL_DIR, VERIFY_FILE, crash_point, tflite_file, write_atomic



def task_of(task):
    """A registered task (toolkit.tasks): its spec, or the spec of the name given."""
    return task if isinstance(task, tasks.Task) else tasks.get(task)


def as_inputs(model, inputs):
    """The model's inputs as {input name: array of its declared dtype} (float32 pixels, int32 token
    ids...): `inputs` is one array for a one-input model, or a dict by input name."""
    if not isinstance(inputs, dict):
        if len(model.inputs) != 1:
            raise ToolkitError(f"{model.name} takes {[t.name for t in model.inputs]}: pass a dict of arrays")
        inputs = {model.inputs[0].name: inputs}
    missing = {t.name for t in model.inputs} - set(inputs)
    if missing:
        raise ToolkitError(f"{model.name}: missing inputs {sorted(missing)}")
    return {t.name: np.asarray(inputs[t.name], np.dtype(t.dtype)) for t in model.inputs}


def feed(inputs):
    """What model.predict takes: the one array, or the dict."""
    return next(iter(inputs.values())) if len(inputs) == 1 else inputs


def first(inputs, n=1):
    return {k: v[:n] for k, v in inputs.items()}


def keras_outputs(model, inputs, batch_size=256):
    """One array, or a dict of arrays by output name for multi-output models (a detector's boxes, scores...)."""
    outputs = model.predict(feed(as_inputs(model, inputs)), batch_size=batch_size, verbose=0)
    return {k: np.asarray(v) for k, v in outputs.items()} if isinstance(outputs, dict) else np.asarray(outputs)


def named_like(outputs, reference):
    """A one-output file's bare array, named as the Keras model's one named output (a multi-task model
    with only its presence head returns {"presence": ...} from Keras, one array from LiteRT)."""
    if isinstance(reference, dict) and len(reference) == 1 and not isinstance(outputs, dict):
        return {next(iter(reference)): outputs}
    return outputs


def concatenate(batches):
    if isinstance(batches[0], dict):
        return {k: np.concatenate([np.asarray(b[k]) for b in batches]) for k in batches[0]}
    return np.concatenate([np.asarray(b) for b in batches])


def max_abs_diff(outputs, reference):
    """Largest absolute difference over every output (both one array, or both dicts by name)."""
    if isinstance(reference, dict):
        return max(max_abs_diff(outputs[k], v) for k, v in reference.items())
    return float(np.max(np.abs(np.asarray(outputs, np.float64) - np.asarray(reference, np.float64))))


def all_finite(outputs):
    values = outputs.values() if isinstance(outputs, dict) else [outputs]
    return all(np.isfinite(np.asarray(v, np.float64)).all() for v in values)


def finish_run(run_dir, model, task, test_inputs, test_labels, calibration_inputs, threads=2):
    """Saves, exports and verifies `model` in `run_dir`; returns (formats, keras test outputs).

    test_inputs / calibration_inputs: one array, or a dict by input name for multi-input models."""
    module = task_of(task)
    model_path = os.path.join(run_dir, MODEL_FILE)
    model.save(model_path)  # into the run's partial folder: the old run stays whole until the swap
    crash_point("export")
    test_inputs, calibration_inputs = as_inputs(model, test_inputs), as_inputs(model, calibration_inputs)
    outputs = keras_outputs(model, test_inputs)
    latency, p90 = litert.median_latency_ms(model.predict_on_batch, feed(first(test_inputs)))
    formats = {
        "keras": {
            **module.score(outputs, test_labels),
            "latency_ms": latency,
            "latency_p90_ms": p90,
            "size_bytes": litert.size_bytes(model_path),
        }
    }
    np.savez(
        os.path.join(run_dir, VERIFY_FILE),
        **({f"labels__{k}": v for k, v in test_labels.items()} if isinstance(test_labels, dict)
           else {"labels": test_labels}),  # fmt: skip
        **({f"keras_outputs__{k}": v for k, v in outputs.items()} if isinstance(outputs, dict)
           else {"keras_outputs": outputs}),  # fmt: skip
        **{f"input__{k}": _compact(v) for k, v in test_inputs.items()},
        **{f"calibration__{k}": _compact(v) for k, v in calibration_inputs.items()},
    )
    formats.update(export_formats_any_backend(run_dir, task, threads))
    return formats, outputs


def _compact(array):
    """Pixels that are whole numbers in 0..255 are stored as uint8 (4x smaller); cast back on use."""
    if array.dtype.kind == "f" and array.size and array.min() >= 0 and array.max() <= 255:
        if np.array_equal(array, np.round(array)):
            return array.astype(np.uint8)
    return array


def _saved(data, prefix):
    return {k[len(prefix) :]: data[k] for k in data.files if k.startswith(prefix)}


def export_formats_any_backend(run_dir, task, threads=2, export=None):
    """`export(run_dir, task, threads)` (this module's export_formats unless given: a decoder passes its
    own) on the TensorFlow backend: here, or in a TensorFlow-backend subprocess running `export`'s module."""
    import keras

    export = export or export_formats
    if keras.backend.backend() == "tensorflow":
        return export(run_dir, task_of(task), threads)
    env = dict(os.environ, KERAS_BACKEND="tensorflow")
    command = [sys.executable, "-m", export.__module__, run_dir, task_of(task).name, str(threads)]
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
        ours = [line[len("error: ") :] for line in lines if line.startswith("error: ")]  # not converter chatter
        detail = ours[-1] if ours else lines[-1] if lines else f"exit status {done.returncode}"
        raise ToolkitError(f"export on the TensorFlow backend failed: {detail}")
    with open(os.path.join(run_dir, "formats.json")) as f:
        formats = json.load(f)
    os.remove(os.path.join(run_dir, "formats.json"))
    return formats


def export_formats(run_dir, task, threads=2):
    """TensorFlow backend: SavedModel and LiteRT files from model.keras, each verified (a decoder's
    parts and decoding loop go through toolkit.export.decoding instead)."""
    module = task_of(task)
    if module.is_decoder:
        raise ToolkitError(f"{module.name} is a decoder: export it with toolkit.export.decoding")
    model, inputs, calibration, labels, reference = load_test_data(run_dir)
    saved_model_dir = os.path.join(run_dir, SAVED_MODEL_DIR)
    litert.export_saved_model(model, saved_model_dir)
    formats = {"saved_model": saved_model_format(saved_model_dir, module, inputs, labels, reference)}
    for name in module.litert_formats:
        formats[name] = litert_format(run_dir, module, name, saved_model_dir, inputs, calibration, labels, reference,
                                      (threads,), module.float_layers_of(model))  # fmt: skip
    if module.raw_model is not None and "tflite_fp32" in formats:
        formats["tflite_fp32"]["raw_max_abs_diff"] = raw_maps_diff(run_dir, module.raw_model(model), inputs)
    return formats


def raw_maps_diff(run_dir, raw_model, inputs):
    """Largest difference between Keras and an fp32 LiteRT file of the model up to its post-processing
    (a detector's heatmap and edge maps...) on the whole test split: the tight check where no order can
    change, beside the task's own comparison of post-processed outputs. The file is not kept."""
    return max(raw_maps_diffs(run_dir, raw_model, inputs).values())


def raw_maps_diffs(run_dir, raw_model, inputs):
    """raw_maps_diff per map: {output name: largest difference} (a heatmap's probabilities and a box-edge
    map's pixel distances differ in scale, and so do their rounding differences)."""
    import shutil
    import tempfile

    with tempfile.TemporaryDirectory(dir=run_dir) as scratch:
        saved = os.path.join(scratch, "saved_model")
        litert.export_saved_model(raw_model, saved)
        path = os.path.join(scratch, "maps.tflite")
        with open(path, "wb") as f:
            f.write(litert.convert(saved, "fp32"))
        reference = keras_outputs(raw_model, inputs)
        outputs = named_like(litert.LiteRTModel(path).predict(feed(inputs)), reference)
        shutil.rmtree(saved)
    if not isinstance(reference, dict):
        return {"output": max_abs_diff(outputs, reference)}
    return {name: max_abs_diff(outputs[name], value) for name, value in reference.items()}


def load_test_data(run_dir, allow_unsafe=False):
    """A finished run's model and stored test split: (model, inputs, calibration, labels, Keras outputs)."""
    from toolkit import saving

    model = saving.load_model(os.path.join(run_dir, MODEL_FILE), allow_unsafe)
    data = np.load(os.path.join(run_dir, VERIFY_FILE))
    inputs, calibration = as_inputs(model, _saved(data, "input__")), as_inputs(model, _saved(data, "calibration__"))
    reference = data["keras_outputs"] if "keras_outputs" in data.files else _saved(data, "keras_outputs__")
    labels = data["labels"] if "labels" in data.files else _saved(data, "labels__")  # one array, or a dict by head
    return model, inputs, calibration, labels, reference


def saved_model_format(saved_model_dir, module, inputs, labels, reference):
    """Scores the SavedModel on the whole test split and times its batch-1 latency."""
    import tensorflow as tf

    loaded = tf.saved_model.load(saved_model_dir)  # keep a reference: .serve alone loses its variables

    def serve(batch):  # Keras' endpoint takes the model's input structure: one tensor, or the dict
        return loaded.serve(tf.nest.map_structure(tf.constant, feed(batch)))

    count = len(next(iter(inputs.values())))
    outputs = concatenate([serve({k: v[i : i + 256] for k, v in inputs.items()}) for i in range(0, count, 256)])
    latency, p90 = litert.median_latency_ms(serve, first(inputs))
    return {
        **module.score(outputs, labels),
        "latency_ms": latency,
        "latency_p90_ms": p90,
        "size_bytes": litert.size_bytes(saved_model_dir),
        "max_abs_diff": max_abs_diff(outputs, reference),
        **module.compare(outputs, reference),
    }


def litert_format(run_dir, module, name, saved_model_dir, inputs, calibration, labels, reference, threads=(2,),
                  float_layers=None):  # fmt: skip
    """Converts one LiteRT format, scores it on the whole test split, times batch-1 latency per thread count."""
    path = os.path.join(run_dir, tflite_file(name))
    float_layers = module.float_layers if float_layers is None else float_layers
    converted = litert.convert(saved_model_dir, name.split("_", 1)[1], feed(calibration), float_layers)
    write_atomic(path, metadata.describe_run_file(converted, run_dir, module, name, versions()))  # labels etc. inside
    crash_point(f"export:{name}")
    return _measured(path, lambda count: litert.LiteRTModel(path, threads=count), module, inputs, labels, reference,
                     threads)  # fmt: skip


def onnx_format(run_dir, module, model, inputs, labels, reference, threads=(2,)):
    """The model as ONNX on ONNX Runtime's CPU provider, scored and timed as a LiteRT file is."""
    from toolkit.export import onnx

    path = os.path.join(run_dir, ONNX_FILE)
    onnx.export(model, path, feed(first(inputs)))
    names = list(reference) if isinstance(reference, dict) else None
    return _measured(path, lambda count: onnx.OnnxModel(path, count, names), module, inputs, labels, reference, threads)


def _measured(path, open_runtime, module, inputs, labels, reference, threads):
    """A written file's entry: its outputs on the whole test split (scored, compared with Keras), its
    batch-1 latency per thread count and its size. open_runtime(threads) -> LiteRTModel or OnnxModel."""
    runtime = open_runtime(threads[0])
    outputs = named_like(runtime.predict(feed(inputs)), reference)
    if not all_finite(outputs):
        raise ToolkitError(f"{os.path.basename(path)} gives non-finite outputs")
    by_threads = {str(count): (runtime if count == threads[0] else open_runtime(count)).latency_ms(feed(first(inputs)))
                  for count in threads}  # fmt: skip
    latency, p90 = by_threads[str(threads[0])]
    entry = {
        **module.score(outputs, labels),
        "latency_ms": latency,
        "latency_p90_ms": p90,
        "size_bytes": litert.size_bytes(path),
        "max_abs_diff": max_abs_diff(outputs, reference),
        **module.compare(outputs, reference),
        "threads": threads[0],
    }
    if len(threads) > 1:
        entry["latency_ms_by_threads"] = {k: v[0] for k, v in by_threads.items()}
    if getattr(runtime, "input_quantization", None) or getattr(runtime, "output_quantization", None):
        entry["io_quantization"] = runtime.io_quantization()  # int8 I/O LiteRT files: what a device feeds
    return entry


def versions():
    import importlib.metadata as md

    found = {}
    for name in ("keras", "tensorflow", "keras-hub", "ai-edge-litert", "jax", "torch", "tensorflow-datasets",
                 "onnxruntime", "tf2onnx"):
        try:
            found[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    return found


def main(argv=None, export=None):
    """The TensorFlow-backend subprocess of export_formats_any_backend: RUN_DIR TASK THREADS."""
    run_dir, task, threads = (argv or sys.argv[1:])[:3]
    try:
        formats = (export or export_formats)(run_dir, task_of(task), int(threads))
    except ToolkitError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    write_atomic(os.path.join(run_dir, "formats.json"), json.dumps(formats))
    return 0


if __name__ == "__main__":
    sys.exit(main())
