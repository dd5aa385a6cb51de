"""`toolkit benchmark RUN_DIR`: every export format of a finished run, scored and timed the same way.

For each format: export it (a failure is recorded with its reason, not raised), run the task
metric over the whole stored test split (`test_data.npz`), compare with Keras, time batch-1
latency per thread count (XNNPACK, warm-up, median and p90), and record the size. The table goes
to stdout, `benchmark.json` and the run's `report.md` (its model card). With `floor`, a format
whose metric drops more than `floor` points below Keras fails validation, and the command exits 1
(points as the task counts them: 0..1 metrics x 100, BLEU as it is, perplexity as percent higher).
Decoder runs (translation, generation) get every LiteRT format of each part (encoder, step), scored
by their own decoding loop (metric, share of outputs identical to Keras) and timed per token.
"""

import json
import os
import subprocess
import sys
import traceback

from toolkit import tasks
from toolkit.errors import ToolkitError, choose
from toolkit.export import litert, pipeline, report
from toolkit.runs import BENCHMARK_FILE, REPORT_FILE, REPORT_MD_FILE, SAVED_MODEL_DIR, VERIFY_FILE, Run, write_atomic

FORMATS = ("saved_model", "tflite_fp32", "tflite_fp16", "tflite_dynamic", "tflite_int8", "tflite_int8io",
           "tflite_int16x8", "onnx")


# A decoder (translation, generation) runs as LiteRT parts (encoder, step) in its own decoding loop:
# these formats, scored by that loop and timed per token (the step part's batch-1 latency).
DECODER_FORMATS = ("tflite_fp32", "tflite_fp16", "tflite_dynamic", "tflite_int8", "tflite_int16x8")


def load_run(run_dir):
    """A finished run (`Run`) with the stored test split that every format is re-scored on."""
    run = Run.load(run_dir)
    if not os.path.isfile(run.file(VERIFY_FILE)):
        raise ToolkitError(f"{run_dir} has no {VERIFY_FILE}: rerun its recipe to store the test split")
    return run


def benchmark(run_dir, formats=FORMATS, threads=(1, 2), floor=None, allow_unsafe=False):
    """Returns (result dict, failed formats) and writes benchmark.json and the report.md section.
    Decoder runs get the formats of DECODER_FORMATS among `formats`."""
    found = load_run(run_dir)
    run = found.report  # report.json, which gets every measured format below
    module = tasks.for_recipe(found.recipe)
    metric = run["metric"]
    for name in formats:
        choose("format", name, FORMATS)
    if module.is_decoder:
        keras_score, measure = run["formats"]["keras"][metric], _decoder_formats(run_dir, module, threads)
        formats = [name for name in formats if name in DECODER_FORMATS]
    else:
        keras_score, measure = _single_pass_formats(run_dir, module, metric, threads, allow_unsafe)

    rows = {"keras": {**run["formats"]["keras"], "status": "passed"}}
    for name in formats:
        try:
            entry = measure(name)
        except Exception as e:  # a format that cannot be made or run is a row, not a crash
            lines = [line for line in str(e).strip().splitlines() if line.strip()] or [type(e).__name__]
            rows[name] = {"status": f"failed to export: {lines[0][:200]}"}
            if os.environ.get("TOOLKIT_DEBUG"):
                traceback.print_exc()
            continue
        drop = module.drop(keras_score, entry[metric])  # points lost against Keras
        entry["drop_points"] = drop
        failed = floor is not None and drop > floor
        entry["status"] = f"exported but failed validation: drop {drop:.2f} pt > floor {floor}" if failed else "passed"
        rows[name] = entry
    result = {"recipe": found.recipe, "metric": metric, "threads": list(threads), "floor": floor, "formats": rows}
    write_atomic(found.file(BENCHMARK_FILE), json.dumps(result, indent=2) + "\n")
    # report.json carries every measured format too (with int8 I/O scales, what a device needs to feed it).
    run["formats"].update({k: v for k, v in rows.items() if k != "keras" and run["metric"] in v})
    write_atomic(found.file(REPORT_FILE), json.dumps(run, indent=2) + "\n")
    _update_model_card(run_dir, run, result)
    failures = [k for k, v in rows.items() if v["status"] != "passed"]
    return result, failures


def _single_pass_formats(run_dir, module, metric, threads, allow_unsafe):
    """(Keras' score on the stored test split, format name -> its measured entry)."""
    model, inputs, calibration, labels, reference = pipeline.load_test_data(run_dir, allow_unsafe)
    saved_model_dir = os.path.join(run_dir, SAVED_MODEL_DIR)
    if not os.path.isdir(saved_model_dir):
        litert.export_saved_model(model, saved_model_dir)

    def measure(name):
        if name == "saved_model":
            return pipeline.saved_model_format(saved_model_dir, module, inputs, labels, reference)
        if name == "onnx":
            return pipeline.onnx_format(run_dir, module, model, inputs, labels, reference, threads)
        return pipeline.litert_format(run_dir, module, name, saved_model_dir, inputs, calibration, labels,
                                      reference, threads, module.float_layers_of(model))  # fmt: skip

    return module.score(reference, labels)[metric], measure


def _decoder_formats(run_dir, module, threads):
    """Format name -> the decoding loop's entry on every part in that format (toolkit.export.decoding)."""
    from toolkit.export import decoding

    part_names, data, reference, calibration = decoding.prepare(run_dir, module)
    return lambda name: decoding.decoder_format(run_dir, module, part_names, name, data, reference, tuple(threads),
                                                calibration)  # fmt: skip


def benchmark_in_subprocess(run_dir, formats=FORMATS, threads=(1, 2), floor=None, allow_unsafe=False):
    """benchmark() in a fresh Python process: TensorFlow's converter leaks about 20 MB a convert() call
    (tensorflow#122598) and a run converts up to seven files, so `toolkit benchmark --all` gives each
    run its own process and its peak memory stays that of one run, however many runs there are.
    The child's table is printed as it comes; returns what benchmark() returns, read from benchmark.json."""
    command = [sys.executable, "-m", __name__, run_dir, ",".join(formats), ",".join(map(str, threads)),
               "" if floor is None else str(floor), "1" if allow_unsafe else ""]  # fmt: skip
    done = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if done.returncode != 0:
        lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
        ours = [line[len("error: ") :] for line in lines if line.startswith("error: ")]  # not converter chatter
        detail = lines[-1] if lines else f"exit status {done.returncode}"
        raise ToolkitError(ours[-1] if ours else f"{run_dir}: benchmark failed: {detail}")
    with open(os.path.join(run_dir, BENCHMARK_FILE)) as f:
        result = json.load(f)
    return result, [k for k, v in result["formats"].items() if v["status"] != "passed"]


def main(argv):
    """benchmark_in_subprocess's child: RUN_DIR FORMATS THREADS FLOOR UNSAFE (empty FLOOR: none)."""
    run_dir, formats, threads, floor, unsafe = argv
    try:
        benchmark(run_dir, tuple(formats.split(",")), tuple(int(t) for t in threads.split(",")),
                  float(floor) if floor else None, bool(unsafe))  # fmt: skip
    except ToolkitError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def table(result):
    metric, threads = result["metric"], result["threads"]
    head = f"| format | status | size MB | {metric} | drop vs keras (pt) | " + " | ".join(
        f"ms ({t} thr) | inf/s ({t} thr)" for t in threads
    )
    rows = [head + " |", "|---" * (5 + 2 * len(threads)) + "|"]
    for name, f in result["formats"].items():
        if metric not in f:
            rows.append(f"| {name} | {f['status']} |" + " |" * (3 + 2 * len(threads)))
            continue
        times = f.get("latency_ms_by_threads") or {str(threads[0]): f["latency_ms"]}
        cells = " | ".join(
            f"{times[str(t)]:.3f} | {1000 / times[str(t)]:.0f}" if str(t) in times else " | " for t in threads
        )
        drop = "" if name == "keras" else f"{f['drop_points']:+.2f}"
        rows.append(f"| {name} | {f['status']} | {f['size_bytes'] / 1e6:.3f} | {f[metric]:.4f} | {drop} | {cells} |")
    return "\n".join(rows)


def _update_model_card(run_dir, run, result):
    """report.md: the run's own card, then this benchmark's table (replaced on each benchmark)."""
    card = report.markdown(run)
    section = "\n".join(
        [
            "",
            "## Benchmark: every export format",
            "",
            f"Command: `toolkit benchmark {run_dir}` (batch 1, XNNPACK, threads {result['threads']}"
            + (f", floor {result['floor']} pt" if result["floor"] is not None else "")
            + "). Metric over the whole stored test split.",
            "",
            table(result),
        ]
    )
    for name, f in result["formats"].items():
        if "io_quantization" in f:
            section += (
                f"\n\n`{name}` I/O quantization (real = (q - zero_point) * scale): `{json.dumps(f['io_quantization'])}`"
            )
    write_atomic(os.path.join(run_dir, REPORT_MD_FILE), card.rstrip() + "\n" + section + "\n")


def pareto_plot(results, path):
    """Metric against batch-1 latency for every format of every run (one marker per format)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 4), squeeze=False)
    for ax, (run_dir, result) in zip(axes[0], results.items()):
        metric = result["metric"]
        for name, f in result["formats"].items():
            if metric in f and "latency_ms" in f:
                ax.scatter(f["latency_ms"], f[metric])
                ax.annotate(name, (f["latency_ms"], f[metric]), fontsize=7)
        ax.set_xscale("log")
        ax.set_xlabel("batch-1 latency, ms (log)")
        ax.set_ylabel(metric)
        ax.set_title(os.path.basename(os.path.normpath(run_dir)))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
