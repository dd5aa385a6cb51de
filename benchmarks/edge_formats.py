"""Edge benchmark mode over the default runs: `toolkit benchmark RUN...`, timed, one table.

    python benchmarks/edge_formats.py [--runs saved_models/classification,...] [--threads 1,2]

Expects the default run of each recipe (`toolkit run R`; detection, segmentation and multitask from
benchmarks/transfer.py's preset runs); any other finished runs may be named. Decoder runs get their
LiteRT formats per part, scored by their decoding loop. For each run and format:
status, size, task metric, drop vs Keras, batch-1 latency per thread count. Baselines, in the same
run: each run's LiteRT fp32 file (integer formats are reported as a latency ratio to it), and for
memory, the same benchmark of every run in one process (what `toolkit benchmark --all` did before it
gave each run its own process; TensorFlow's converter leaks about 20 MB per convert() call).
Writes its section of benchmarks/RESULTS.md.
"""

import argparse
import json
import os
import shlex
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks.results import update_section  # noqa: E402

# The default run of every recipe; detection, segmentation and multitask as benchmarks/transfer.py makes
# them from the vision preset (their recipes' defaults otherwise).
DEFAULT_RUNS = ",".join(f"saved_models/{name}" for name in (
    "classification", "sentiment", "node_classification", "detection_pretrained", "segmentation_pretrained",
    "multitask_pretrained", "translation", "generation"))  # fmt: skip
INTEGER = ("tflite_dynamic", "tflite_int8", "tflite_int8io", "tflite_int16x8")
MAX_DROP = 1.0  # points: what an integer format may lose and still count (issue 19)


def run_measured(command):
    """Runs `command`; returns (stdout, exit status, peak RSS in MB of it and its children, seconds)."""
    start = time.perf_counter()
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))  # fmt: skip
    out, err = process.communicate()
    seconds = time.perf_counter() - start
    # communicate() waited for it: RUSAGE_CHILDREN's ru_maxrss is now the largest process of the tree so far
    import resource

    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    if process.returncode not in (0, 1):  # 1: a format failed its floor, which is a row, not a crash
        sys.exit(f"{shlex.join(command)} failed:\n{err[-3000:]}")
    return out, process.returncode, peak, seconds


IN_ONE_PROCESS = """
import sys
from toolkit.export import benchmark
for run in sys.argv[2:]:
    benchmark.benchmark(run, threads=tuple(int(t) for t in sys.argv[1].split(",")))
"""


def main(argv):
    p = argparse.ArgumentParser()
    p.add_argument("--runs", default=DEFAULT_RUNS, help="comma-separated run folders")
    p.add_argument("--threads", default="1,2")
    p.add_argument("--skip-memory-baseline", action="store_true", help="do not rerun every run in one process")
    args = p.parse_args(argv)
    runs = args.runs.split(",")
    for run in runs:
        if not os.path.isfile(os.path.join(ROOT, run, "report.json")):
            sys.exit(f"{run} is not a finished run (no report.json): run its recipe first")
    # Memory baseline first: every run in one process, as before. Its peak is the largest so far.
    baseline_peak = None
    if not args.skip_memory_baseline:
        _, _, baseline_peak, _ = run_measured([sys.executable, "-c", IN_ONE_PROCESS, args.threads, *runs])
    # The measured run last, so its benchmark.json files are the ones in the table. RUSAGE_CHILDREN only
    # grows, so its own peak is measured in a fresh interpreter that runs just this command.
    command = [sys.executable, "-m", "toolkit.cli", "benchmark", *runs, "--threads", args.threads]
    measure = ("import json, resource, subprocess, sys, time; t = time.perf_counter(); "
               "done = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
               "print(json.dumps({'rc': done.returncode, 'out': done.stdout, 'err': done.stderr[-3000:], "
               "'seconds': time.perf_counter() - t, "
               "'peak': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))")  # fmt: skip
    found = json.loads(subprocess.run([sys.executable, "-c", measure, *command], cwd=ROOT, capture_output=True,
                                      text=True, check=True).stdout)  # fmt: skip
    if found["rc"] not in (0, 1):
        sys.exit(f"{shlex.join(command)} failed:\n{found['err']}")
    print(found["out"])
    seconds, peak = found["seconds"], found["peak"]
    threads = args.threads.split(",")
    rows, checks = [], []
    for run in runs:
        name = os.path.basename(os.path.normpath(run))
        with open(os.path.join(ROOT, run, "benchmark.json")) as f:
            result = json.load(f)
        metric, formats = result["metric"], result["formats"]
        fp32 = formats.get("tflite_fp32", {})
        for fmt, f in formats.items():
            if metric not in f:
                rows.append(f"| {name} | {fmt} | {f['status']} |" + " |" * (5 + len(threads)))
                continue
            by = f.get("latency_ms_by_threads") or {threads[0]: f["latency_ms"]}
            times = " | ".join(f"{by[t]:.3f}" if t in by else "" for t in threads)
            drop = "" if fmt == "keras" else f"{f['drop_points']:+.2f}"
            ratio = f"{f['latency_ms'] / fp32['latency_ms']:.2f}x" if "latency_ms" in fp32 and fmt != "keras" else ""
            rows.append(f"| {name} | {fmt} | {f['status']} | {f['size_bytes'] / 1e6:.3f} | {metric} {f[metric]:.4f} "
                        f"| {drop} | {times} | {ratio} |")  # fmt: skip
        # the target: an integer format both faster than fp32 LiteRT and within 1 pt of Keras
        good = [(formats[k]["latency_ms"] / fp32["latency_ms"], k) for k in INTEGER
                if "drop_points" in formats.get(k, {}) and formats[k]["drop_points"] <= MAX_DROP
                and "latency_ms" in fp32]  # fmt: skip
        best = min(good) if good else None
        checks.append((f"{name}: an integer format faster than fp32 and within {MAX_DROP:g} pt",
                       f"{best[1]} {best[0]:.2f}x" if best else "none within the drop",
                       best is not None and best[0] < 1.0))  # fmt: skip
        for k in ("tflite_int8", "tflite_int16x8"):
            if "drop_points" in formats.get(k, {}):
                checks.append((f"{name}: {k} drop <= {MAX_DROP:g} pt", f"{formats[k]['drop_points']:+.2f} pt",
                               formats[k]["drop_points"] <= MAX_DROP))  # fmt: skip
        onnx = formats.get("onnx", {})
        if "latency_ms" in onnx and "latency_ms" in fp32:
            checks.append((f"{name}: ONNX Runtime batch-1 latency vs LiteRT fp32 (1 thread)",
                           f"{onnx['latency_ms'] / fp32['latency_ms']:.2f}x", True))  # fmt: skip
        passed = all(f["status"] == "passed" for f in formats.values())
        checks.append((f"{name}: every format passes", "yes" if passed else "no", passed))
    checks.append((f"`toolkit benchmark` over {len(runs)} runs <= 10 minutes", f"{seconds / 60:.1f} min",
                   seconds <= 600))  # fmt: skip
    if baseline_peak is not None:
        checks.append((f"peak RSS, one process per run, vs all {len(runs)} runs in one process",
                       f"{peak:.0f} MB vs {baseline_peak:.0f} MB", peak <= baseline_peak))  # fmt: skip
    load = os.getloadavg()[0]
    body = "\n".join(
        [
            "## Edge benchmark mode (issues 8, 19): every default run through every format",
            "",
            f"Command: `{shlex.join(['python', 'benchmarks/edge_formats.py', *argv])}` ({time.strftime('%Y-%m-%d')}, "
            f"load average {load:.2f} after it), which runs `toolkit {shlex.join(command[3:])}` (one process per run); "
            "metric over each run's whole test split, batch-1 latency on XNNPACK (LiteRT) and on ONNX Runtime's "
            "CPU provider (`onnx`: Keras `format=\"onnx\"`, tf2onnx). Baseline: each run's LiteRT fp32, in the "
            "same run; `x fp32` is the 1-thread latency ratio to it. `tflite_int16x8`: int8 weights, int16 "
            "activations (ai-edge-quantizer `static_wi8_ai16`), which XNNPACK does not accelerate.",
            "",
            "| target | measured | met |",
            "|---|---|---|",
            *[f"| {name} | {value} | {'yes' if ok else '**no**'} |" for name, value, ok in checks],
            "",
            "| run | format | status | size MB | metric | drop vs keras (pt) | "
            + " | ".join(f"ms ({t} thr)" for t in threads)
            + " | x fp32 |",
            "|---|---|---|---|---|---|" + "---|" * len(threads) + "---|",
            *rows,
        ]
    )
    update_section("edge_formats", body)
    print(body)
    return found["rc"]


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
