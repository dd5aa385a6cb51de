"""How far each default model's LiteRT files are from this CPU's limit: achieved GFLOP/s at batch 1
and 32, fp32 and int8, beside the peak of one dense matmul on the same runtime.

    python benchmarks/roofline.py [--runs saved_models/classification,...] [--threads 1]

Peak: one Dense layer (a 256 x 2048 by 2048 x 2048 matrix product, 2.1 GFLOP) converted to LiteRT
fp32 and int8 and timed on XNNPACK like the models: the fastest that runtime multiplies matrices on
this CPU, which the models' convolutions and dense layers reduce to. A model's FLOPs are its
report.json count (a multiply-add is 2; element-wise work is left out, as fvcore does), so its
GFLOP/s is what its matrix products achieve, and the rest of its time is the distance to the limit:
small layers, memory traffic, element-wise ops, per-op overhead. Writes its RESULTS.md section.
"""

import argparse
import json
import os
import platform
import shlex
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks.results import update_section  # noqa: E402

DEFAULT_RUNS = ("saved_models/classification,saved_models/sentiment,saved_models/node_classification,"
                "saved_models/detection_pretrained,saved_models/segmentation_pretrained,"
                "saved_models/multitask_pretrained")  # fmt: skip
PEAK_M, PEAK_K, PEAK_N = 256, 2048, 2048


def peak_gflops(threads):
    """{quantization: GFLOP/s} of one big Dense layer on LiteRT (fp32 and full-integer int8)."""
    import keras

    from toolkit.export import litert

    inputs = keras.Input((PEAK_K,), name="x")
    model = keras.Model(inputs, keras.layers.Dense(PEAK_N, use_bias=False)(inputs))
    sample = np.random.default_rng(0).standard_normal((PEAK_M, PEAK_K)).astype(np.float32)
    found = {}
    with tempfile.TemporaryDirectory() as scratch:
        saved = os.path.join(scratch, "saved_model")
        litert.export_saved_model(model, saved)
        for quantization in ("fp32", "int8"):
            path = os.path.join(scratch, f"{quantization}.tflite")
            with open(path, "wb") as f:
                f.write(litert.convert(saved, quantization, sample[:32]))
            median, _ = litert.LiteRTModel(path, threads=threads).latency_ms(sample)
            found[quantization] = 2 * PEAK_M * PEAK_K * PEAK_N / (median / 1000) / 1e9
    return found


def model_rows(run, threads, peaks):
    from toolkit.export import litert

    with open(os.path.join(ROOT, run, "report.json")) as f:
        report = json.load(f)
    flops = report.get("flops")
    data = np.load(os.path.join(ROOT, run, "test_data.npz"))
    inputs = {k[len("input__") :]: data[k] for k in data.files if k.startswith("input__")}
    rows = []
    for quantization in ("fp32", "int8"):
        path = os.path.join(ROOT, run, f"model_{quantization}.tflite")
        if not os.path.isfile(path) or not flops:
            continue
        runtime = litert.LiteRTModel(path, threads=threads)
        cells = []
        for batch in (1, 32):
            # stored pixels may be compacted to uint8; the files take float (or int32 token ids)
            sample = {k: (np.repeat(v[:1], batch, 0) if len(v) < batch else v[:batch]) for k, v in inputs.items()}
            sample = {k: v.astype(np.float32) if v.dtype == np.uint8 else v for k, v in sample.items()}
            median, _ = runtime.latency_ms(sample if len(sample) > 1 else next(iter(sample.values())))
            achieved = flops * batch / (median / 1000) / 1e9
            cells.append((median, achieved, achieved / peaks[quantization]))
        rows.append((os.path.basename(run), quantization, flops, cells))
    return rows


def cpu_name():
    """The processor's model name (/proc/cpuinfo), which the peak depends on."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main(argv):
    p = argparse.ArgumentParser()
    p.add_argument("--runs", default=DEFAULT_RUNS)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    start = time.perf_counter()
    peaks = peak_gflops(args.threads)
    rows = []
    for run in args.runs.split(","):
        if not os.path.isfile(os.path.join(ROOT, run, "report.json")):
            sys.exit(f"{run} is not a finished run (no report.json): run its recipe first")
        rows += model_rows(run, args.threads, peaks)
    seconds = time.perf_counter() - start
    body = "\n".join([
        "## Against the limit (issue 19): achieved GFLOP/s of the LiteRT files beside one dense matmul",
        "",
        f"Command: `{shlex.join(['python', 'benchmarks/roofline.py', *argv])}` ({time.strftime('%Y-%m-%d')}, "
        f"{cpu_name()}, {os.cpu_count()} cores, {args.threads} XNNPACK thread(s), "
        f"{seconds:.0f} s, load average {os.getloadavg()[0]:.2f} after it). FLOPs: report.json's count (a "
        "multiply-add is 2). Peak: one Dense layer, "
        f"{PEAK_M} x {PEAK_K} by {PEAK_K} x {PEAK_N}, on the same runtime: "
        f"**fp32 {peaks['fp32']:.1f} GFLOP/s, int8 {peaks['int8']:.1f} GOP/s**.",
        "",
        "| run | file | MFLOP / item | batch-1 ms | batch-1 GFLOP/s | of peak | batch-32 ms | batch-32 GFLOP/s | of peak |",
        "|---|---|---|---|---|---|---|---|---|",
        *[f"| {run} | {q} | {flops / 1e6:.1f} | " + " | ".join(f"{ms:.3f} | {g:.1f} | {share:.0%}" for ms, g, share in cells)
          + " |" for run, q, flops, cells in rows],
    ])  # fmt: skip
    update_section("roofline", body)
    print(body)


if __name__ == "__main__":
    main(sys.argv[1:])
