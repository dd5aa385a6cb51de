"""The shared path from a trained model to a verified run folder, for every task.

    model.keras -> SavedModel -> LiteRT fp32 / int8 -> each verified on the whole test split
    (task metric, max abs diff against Keras, batch-1 latency) -> report.json / report.md

LiteRT conversion needs TensorFlow: on the jax and torch backends the export stage runs in a
TensorFlow-backend subprocess on the saved `.keras` file (`python -m toolkit.export.pipeline`),
comparing against the outputs of the Keras model as trained, on its own backend.
"""

import importlib
import json
import os
import subprocess
import sys

import numpy as np

from toolkit.errors import ToolkitError
from toolkit.export import litert
from toolkit.export.run_folder import write_atomic

VERIFY_FILE = "verify.npz"
LITERT_FORMATS = ("tflite_fp32", "tflite_int8")  # a task module may set its own LITERT_FORMATS


def task_module(task):
    return importlib.import_module(f"toolkit.tasks.{task}")


def litert_formats(module):
    return getattr(module, "LITERT_FORMATS", LITERT_FORMATS)


def tflite_file(fmt):
    """'tflite_int8' -> 'model_int8.tflite'."""
    return f"model_{fmt.split('_', 1)[1]}.tflite"


def input_dtype(model):
    """Inputs go in as the model declares them: float32 pixels, int32 token ids."""
    return np.dtype(model.inputs[0].dtype)


def keras_outputs(model, inputs, batch_size=256):
    inputs = np.asarray(inputs, input_dtype(model))
    return np.asarray(model.predict(inputs, batch_size=batch_size, verbose=0))


def finish_run(run_dir, model, task, test_images, test_labels, calibration_images, threads=2):
    """Saves, exports and verifies `model` in `run_dir`; returns (formats, keras test outputs)."""
    module = task_module(task)
    model_path = os.path.join(run_dir, "model.keras")
    model.save(model_path)
    outputs = keras_outputs(model, test_images)
    sample = np.asarray(test_images[:1], input_dtype(model))
    latency, p90 = litert.median_latency_ms(model.predict_on_batch, sample)
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
        images=test_images,
        labels=test_labels,
        keras_outputs=outputs,
        calibration=calibration_images,
    )
    try:
        formats.update(export_formats_any_backend(run_dir, task, threads))
    finally:
        os.remove(os.path.join(run_dir, VERIFY_FILE))
    return formats, outputs


def export_formats_any_backend(run_dir, task, threads=2):
    import keras

    if keras.backend.backend() == "tensorflow":
        return export_formats(run_dir, task, threads)
    env = dict(os.environ, KERAS_BACKEND="tensorflow")
    command = [sys.executable, "-m", "toolkit.export.pipeline", run_dir, task, str(threads)]
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
        raise ToolkitError(f"export on the TensorFlow backend failed: {lines[-1] if lines else done.returncode}")
    with open(os.path.join(run_dir, "formats.json")) as f:
        formats = json.load(f)
    os.remove(os.path.join(run_dir, "formats.json"))
    return formats


def export_formats(run_dir, task, threads=2):
    """TensorFlow backend: SavedModel and LiteRT files from model.keras, each verified."""
    import keras
    import tensorflow as tf

    module = task_module(task)
    data = np.load(os.path.join(run_dir, VERIFY_FILE))
    model = keras.saving.load_model(os.path.join(run_dir, "model.keras"), safe_mode=True)
    images, labels, reference = data["images"].astype(input_dtype(model)), data["labels"], data["keras_outputs"]
    formats = {}

    saved_model_dir = os.path.join(run_dir, "saved_model")
    litert.export_saved_model(model, saved_model_dir)
    loaded = tf.saved_model.load(saved_model_dir)  # keep a reference: .serve alone loses its variables
    serve = loaded.serve
    outputs = np.concatenate([serve(tf.constant(images[i : i + 256])).numpy() for i in range(0, len(images), 256)])
    latency, p90 = litert.median_latency_ms(lambda x: serve(tf.constant(x)), images[:1])
    formats["saved_model"] = {
        **module.score(outputs, labels),
        "latency_ms": latency,
        "latency_p90_ms": p90,
        "size_bytes": litert.size_bytes(saved_model_dir),
        "max_abs_diff": float(np.max(np.abs(outputs - reference))),
    }
    for name in litert_formats(module):
        quantization = name.split("_", 1)[1]
        path = os.path.join(run_dir, tflite_file(name))
        write_atomic(path, litert.convert(saved_model_dir, quantization, data["calibration"]))
        runtime = litert.LiteRTModel(path, threads=threads)
        outputs = runtime.predict(images)
        latency, p90 = runtime.latency_ms(images[:1])
        formats[name] = {
            **module.score(outputs, labels),
            "latency_ms": latency,
            "latency_p90_ms": p90,
            "size_bytes": litert.size_bytes(path),
            "max_abs_diff": float(np.max(np.abs(outputs - reference))),
            "threads": threads,
        }
    return formats


def versions():
    import importlib.metadata as md

    found = {}
    for name in ("keras", "tensorflow", "keras-hub", "ai-edge-litert", "jax", "torch", "tensorflow-datasets"):
        try:
            found[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    return found


def main(argv=None):
    run_dir, task, threads = (argv or sys.argv[1:])[:3]
    try:
        formats = export_formats(run_dir, task, int(threads))
    except ToolkitError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    write_atomic(os.path.join(run_dir, "formats.json"), json.dumps(formats))
    return 0


if __name__ == "__main__":
    sys.exit(main())
