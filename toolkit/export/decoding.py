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

from toolkit.errors import ToolkitError
from toolkit.export import litert, metadata, pipeline
from toolkit.runs import MODEL_FILE, SAVED_MODEL_DIR, VERIFY_FILE, tflite_file, write_atomic
from toolkit.tasks import decoding


def litert_engine(path, threads=2):
    """A part's LiteRT file as a decoding Engine (tasks.decoding): the same loop runs on Keras and LiteRT."""
    runtime = litert.LiteRTModel(path, threads=threads)
    specs = {k: (tuple(int(d) for d in v["shape"][1:]), np.dtype(v["dtype"]))
             for k, v in runtime.runner.get_input_details().items()}  # fmt: skip
    engine = decoding.Engine(runtime.outputs, specs, path)
    engine.runtime = runtime
    return engine


def finish_run(run_dir, model, task, test_data, threads=2, calibration_data=None):
    """Saves `model`, decodes the test split with its Keras parts, exports and verifies every LiteRT
    format (in a TensorFlow subprocess on other backends); returns (formats, Keras metrics, decoded).

    calibration_data: the task's data structure (as test_data) on a slice of the training split; stored
    with the test split, so `toolkit benchmark` can calibrate int8 and int16x8 parts on it."""
    module = pipeline.task_of(task)
    model_path = os.path.join(run_dir, MODEL_FILE)
    model.save(model_path)
    engines = {name: decoding.keras_engine(part) for name, part in module.parts(model).items()}
    metrics, decoded = module.evaluate(engines, test_data)
    formats = {"keras": {**metrics, **_latency(engines, module), "size_bytes": litert.size_bytes(model_path)}}
    np.savez(os.path.join(run_dir, VERIFY_FILE), keras_outputs=decoded,
             **{f"data__{k}": np.asarray(v) for k, v in test_data.items()},
             **{f"calibration__{k}": np.asarray(v) for k, v in (calibration_data or {}).items()})  # fmt: skip
    formats.update(pipeline.export_formats_any_backend(run_dir, module, threads, export_formats))
    return formats, metrics, decoded


def load_test_data(run_dir):
    """(test data, Keras' decoded ids, calibration data or None) as finish_run stored them."""
    data = np.load(os.path.join(run_dir, VERIFY_FILE))
    test = {k[len("data__") :]: data[k] for k in data.files if k.startswith("data__")}
    calibration = {k[len("calibration__") :]: data[k] for k in data.files if k.startswith("calibration__")}
    return test, data["keras_outputs"], calibration or None


def tflite_path(run_dir, part, fmt):
    """('decoder_step', 'tflite_fp32') -> RUN/decoder_step_fp32.tflite."""
    return os.path.join(run_dir, tflite_file(fmt, part))


CALIBRATION_SAMPLES = 256  # per part: the converter's representative dataset runs them one at a time


def calibration_inputs(module, parts, data, count=CALIBRATION_SAMPLES):
    """{part: {input name: (N, ...) array}}: what each part is fed when the task's own decoding loop
    runs the Keras parts over `data` (training-split items): the step part sees the recurrent states
    that decoding really produces, not random ones. N samples are taken evenly over every call."""
    seen = {name: [] for name in parts}

    def recording(name, engine):
        def call(inputs):
            seen[name].append({k: np.asarray(v) for k, v in inputs.items()})
            return engine.call(inputs)

        return decoding.Engine(call, engine.specs, engine.name)

    engines = {name: recording(name, decoding.keras_engine(part)) for name, part in parts.items()}
    module.evaluate(engines, data)
    samples = {}
    for name, calls in seen.items():
        stacked = {k: np.concatenate([c[k] for c in calls]) for k in calls[0]}
        total = len(next(iter(stacked.values())))
        picks = np.linspace(0, total - 1, min(count, total)).astype(int)
        samples[name] = {k: v[picks] for k, v in stacked.items()}
    return samples


def prepare(run_dir, module):
    """A finished decoder run's parts as SavedModels (made when missing) and its stored data:
    ({part name: the task's float layers it holds}, test data, Keras' decoded ids, calibration: a
    function giving calibration_inputs)."""
    from toolkit import saving

    model = saving.load_model(os.path.join(run_dir, MODEL_FILE))
    data, reference, calibration_data = load_test_data(run_dir)
    parts = module.parts(model)
    for name, part in parts.items():
        litert.export_saved_model(part, os.path.join(run_dir, SAVED_MODEL_DIR, name))
    found = {}

    def calibration():
        if calibration_data is None:
            raise ToolkitError(f"{run_dir} stores no training samples to calibrate integer parts on: rerun its recipe")
        if not found:
            found.update(calibration_inputs(module, parts, calibration_data))
        return found

    return {name: module.float_layers_of(part) for name, part in parts.items()}, data, reference, calibration


def export_formats(run_dir, module, threads=2, formats=None):  # module: the DecoderTask
    """TensorFlow backend: every part as a SavedModel and as each LiteRT format (the task's own unless
    `formats` names others), each format's decoding loop run over the whole stored test split and
    compared with Keras. threads: one count, or several (the first scores; each is timed)."""
    part_names, data, reference, calibration = prepare(run_dir, module)
    threads = (threads,) if isinstance(threads, int) else tuple(threads)
    return {fmt: decoder_format(run_dir, module, part_names, fmt, data, reference, threads, calibration)
            for fmt in formats or module.litert_formats}  # fmt: skip


def decoder_format(run_dir, module, part_names, fmt, data, reference, threads=(2,), calibration=None):
    """One LiteRT format of every part, its decoding loop scored on the test split, timed per part;
    part_names: prepare()'s {part: float layers} (integer files keep those in float); calibration:
    prepare()'s function, called only for the integer formats."""
    integer = fmt.split("_", 1)[1] in litert.INTEGER
    samples_by_part = calibration() if integer else {}
    engines = {}
    for name in part_names:
        path = tflite_path(run_dir, name, fmt)
        samples = samples_by_part.get(name)
        converted = litert.convert(os.path.join(run_dir, SAVED_MODEL_DIR, name), fmt.split("_", 1)[1], samples,
                                   part_names[name])  # fmt: skip
        write_atomic(path, metadata.describe_run_file(converted, run_dir, module, fmt, pipeline.versions(), part=name))
        if integer:  # a calibrated file can abort the interpreter (litert.probe)
            litert.probe(path)
        engines[name] = litert_engine(path, threads[0])
    metrics, decoded = module.evaluate(engines, data)
    entry = {
        **metrics,
        "identical_to_keras": identical_share(decoded, reference),
        **_latency(engines, module),
        "size_bytes": sum(litert.size_bytes(tflite_path(run_dir, name, fmt)) for name in part_names),
        "threads": threads[0],
    }
    if len(threads) > 1:
        by = {str(threads[0]): entry["latency_ms"]}
        for count in threads[1:]:
            step = litert_engine(tflite_path(run_dir, module.step_part, fmt), count)
            by[str(count)] = step.runtime.latency_ms(step.sample())[0]
        entry["latency_ms_by_threads"] = by
    return entry


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
