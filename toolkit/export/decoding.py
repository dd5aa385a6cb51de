"""The shared export path for decoders (translation, language models), where what is verified is a
decoding loop, not one forward pass.

    model.keras -> task.parts(model) (encoder, decoder step...) -> each part: SavedModel -> LiteRT
    -> the task's own decoding loop (task.evaluate) on Keras, then on each LiteRT format, over the
    whole stored test split: task metric, share of outputs identical to Keras, per-part latency

A decoder task (`toolkit.tasks.DecoderTask`) provides `parts(model) -> {name: keras.Model}`,
`evaluate(engines, data) -> (metrics, decoded ids)`, its metric, LiteRT formats and step_part (the
part run once per token). This module imports toolkit.export.pipeline, never the other way round: on
another backend, pipeline runs this module's export_formats in a TensorFlow subprocess (`python -m
toolkit.export.decoding`).
The run folder gets `<part>_<format>.tflite`, `saved_model/<part>/`, `test_data.npz` and the usual
report.json formats (latency_ms there is the step part's batch-1 latency: per token).
"""

import os

import numpy as np

from toolkit.export import litert, pipeline
from toolkit.runs import MODEL_FILE, SAVED_MODEL_DIR, VERIFY_FILE, tflite_file, write_atomic
from toolkit.tasks import decoding


def litert_engine(path, threads=2):
    """A part's LiteRT file as a decoding Engine (tasks.decoding): the same loop runs on Keras and LiteRT."""
    runtime = litert.LiteRTModel(path, threads=threads)
    specs = {k: (tuple(int(d) for d in v["shape"][1:]), np.dtype(v["dtype"]))
             for k, v in runtime.runner.get_input_details().items()}  # fmt: skip
    engine = decoding.Engine(runtime, specs, path)
    engine.runtime = runtime
    return engine


def finish_run(run_dir, model, task, test_data, threads=2):
    """Saves `model`, decodes the test split with its Keras parts, exports and verifies every LiteRT
    format (in a TensorFlow subprocess on other backends); returns (formats, Keras metrics, decoded)."""
    module = pipeline.task_of(task)
    model_path = os.path.join(run_dir, MODEL_FILE)
    model.save(model_path)
    engines = {name: decoding.keras_engine(part) for name, part in module.parts(model).items()}
    metrics, decoded = module.evaluate(engines, test_data)
    formats = {"keras": {**metrics, **_latency(engines, module), "size_bytes": litert.size_bytes(model_path)}}
    np.savez(os.path.join(run_dir, VERIFY_FILE), keras_outputs=decoded,
             **{f"data__{k}": np.asarray(v) for k, v in test_data.items()})  # fmt: skip
    formats.update(pipeline.export_formats_any_backend(run_dir, module, threads, export_formats))
    return formats, metrics, decoded


def load_test_data(run_dir):
    data = np.load(os.path.join(run_dir, VERIFY_FILE))
    return {k[len("data__") :]: data[k] for k in data.files if k.startswith("data__")}, data["keras_outputs"]


def tflite_path(run_dir, part, fmt):
    """('decoder_step', 'tflite_fp32') -> RUN/decoder_step_fp32.tflite."""
    return os.path.join(run_dir, tflite_file(fmt, part))


def export_formats(run_dir, module, threads=2):  # module: the DecoderTask
    """TensorFlow backend: every part as a SavedModel and as each LiteRT format, each format's
    decoding loop run over the whole stored test split and compared with Keras."""
    from toolkit import saving

    model = saving.load_model(os.path.join(run_dir, MODEL_FILE))
    data, reference = load_test_data(run_dir)
    parts = module.parts(model)
    for name, part in parts.items():
        litert.export_saved_model(part, os.path.join(run_dir, SAVED_MODEL_DIR, name))
    formats = {}
    for fmt in module.litert_formats:
        engines = {}
        for name in parts:
            path = tflite_path(run_dir, name, fmt)
            write_atomic(path, litert.convert(os.path.join(run_dir, SAVED_MODEL_DIR, name), fmt.split("_", 1)[1]))
            engines[name] = litert_engine(path, threads)
        metrics, decoded = module.evaluate(engines, data)
        formats[fmt] = {
            **metrics,
            "identical_to_keras": identical_share(decoded, reference),
            **_latency(engines, module),
            "size_bytes": sum(litert.size_bytes(tflite_path(run_dir, name, fmt)) for name in parts),
            "threads": threads,
        }
    return formats


def identical_share(decoded, reference):
    """The share of test items whose decoded ids equal the Keras ones exactly (1.0: every one)."""
    decoded, reference = np.asarray(decoded), np.asarray(reference)
    if decoded.shape[0] != reference.shape[0]:
        return 0.0
    width = max(decoded.shape[1], reference.shape[1])
    decoded = np.pad(decoded, ((0, 0), (0, width - decoded.shape[1])))
    reference = np.pad(reference, ((0, 0), (0, width - reference.shape[1])))
    return float(np.mean(np.all(decoded == reference, axis=1)))


def _latency(engines, module):
    """Batch-1 latency of each part (median, p90 ms); the step part's is the per-token figure."""
    by_part = {}
    for name, engine in engines.items():
        runtime = getattr(engine, "runtime", None)
        sample = engine.sample()
        by_part[name] = runtime.latency_ms(sample) if runtime else litert.median_latency_ms(engine, sample)
    latency, p90 = by_part[module.step_part]
    return {"latency_ms": latency, "latency_p90_ms": p90, "part_latency_ms": {k: v[0] for k, v in by_part.items()}}


if __name__ == "__main__":  # the TensorFlow-backend subprocess of finish_run on jax / torch
    import sys

    sys.exit(pipeline.main(export=export_formats))
