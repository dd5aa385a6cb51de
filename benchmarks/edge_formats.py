"""Edge benchmark mode over every default run: `toolkit benchmark --all`, timed, one table.

    python benchmarks/edge_formats.py [--output saved_models] [--threads 1,2]

Expects the default runs in saved_models/ (`toolkit run classification`, `toolkit run sentiment`,
`toolkit run node_classification`). For each run and format: status, size, task metric, drop vs
Keras, batch-1 latency per thread count. Baseline: each run's LiteRT fp32 file, in the same run;
full-integer int8 latency is reported as a ratio to it. Writes its section of benchmarks/RESULTS.md.
"""

import argparse
import json
import os
import shlex
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.results import update_section  # noqa: E402

TARGET_INT8_DROP = {"classification": 1.0, "sentiment": 1.0}


def main(argv):
    p = argparse.ArgumentParser()
    p.add_argument("--output", default="saved_models")
    p.add_argument("--threads", default="1,2")
    args = p.parse_args(argv)
    command = [
        sys.executable,
        "-m",
        "toolkit.cli",
        "benchmark",
        "--all",
        "--output",
        args.output,
        "--threads",
        args.threads,
    ]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    print(done.stdout)
    runs = sorted(d for d in os.listdir(args.output) if os.path.isfile(os.path.join(args.output, d, "benchmark.json")))
    threads = args.threads.split(",")
    rows, checks = [], []
    for run in runs:
        with open(os.path.join(args.output, run, "benchmark.json")) as f:
            result = json.load(f)
        metric, formats = result["metric"], result["formats"]
        fp32 = formats.get("tflite_fp32", {})
        for name, f in formats.items():
            if metric not in f:
                rows.append(f"| {run} | {name} | {f['status']} |" + " |" * (4 + len(threads)))
                continue
            by = f.get("latency_ms_by_threads") or {threads[0]: f["latency_ms"]}
            times = " | ".join(f"{by[t]:.3f}" if t in by else "" for t in threads)
            drop = "" if name == "keras" else f"{f['drop_points']:+.2f}"
            rows.append(
                f"| {run} | {name} | {f['status']} | {f['size_bytes'] / 1e6:.3f} | {metric} {f[metric]:.4f} | {drop} | {times} |"
            )
        int8, fp16 = formats.get("tflite_int8", {}), formats.get("tflite_fp16", {})
        if "drop_points" in int8 and run in TARGET_INT8_DROP:
            checks.append((f"{run}: full-integer int8 drop <= {TARGET_INT8_DROP[run]} pt", f"{int8['drop_points']:+.2f} pt",
                           int8["drop_points"] <= TARGET_INT8_DROP[run]))  # fmt: skip
        if "drop_points" in fp16:
            checks.append((f"{run}: fp16 drop <= 0.1 pt", f"{fp16['drop_points']:+.2f} pt", fp16["drop_points"] <= 0.1))
        if run == "classification" and "latency_ms" in int8 and "latency_ms" in fp32:
            ratio = int8["latency_ms"] / fp32["latency_ms"]
            checks.append(("classification: int8 latency <= 0.5x fp32", f"{ratio:.2f}x", ratio <= 0.5))
        passed = all(f["status"] == "passed" for f in formats.values())
        checks.append((f"{run}: every format passes", "yes" if passed else "no", passed))
    checks.append(("`toolkit benchmark --all` <= 10 minutes", f"{seconds / 60:.1f} min", seconds <= 600))
    body = "\n".join(
        [
            "## Edge benchmark mode (issue 8): every default run through every format",
            "",
            f"Command: `{shlex.join(['python', 'benchmarks/edge_formats.py', *argv])}` ({time.strftime('%Y-%m-%d')}), "
            f"which runs `toolkit benchmark --all --threads {args.threads}` over the default runs in `{args.output}/`; "
            "metric over each run's whole test split, batch-1 latency on XNNPACK. Baseline: each run's LiteRT fp32.",
            "",
            "| target | measured | met |",
            "|---|---|---|",
            *[f"| {name} | {value} | {'yes' if ok else '**no**'} |" for name, value, ok in checks],
            "",
            "| run | format | status | size MB | metric | drop vs keras (pt) | "
            + " | ".join(f"ms ({t} thr)" for t in threads)
            + " |",
            "|---|---|---|---|---|---|" + "---|" * len(threads),
            *rows,
            "",
            'ONNX (Keras `format="onnx"` on ONNX Runtime) is not measured: onnxruntime is not installed here.',
        ]
    )
    update_section("edge_formats", body)
    print(body)
    return done.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
