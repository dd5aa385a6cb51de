"""The edge backbones trained on the same data and budget: accuracy against int8 milliseconds.

    python benchmarks/edge_backbone.py [--backbones edgenet_lite,edgenet,mobilenetv3_small] [--epochs 8]

Each backbone runs the classification recipe on Fashion-MNIST at 32x32 (keras.applications'
MobileNetV3-Small takes 32 px and up), same epochs, batch size, learning rate, seed and augmentation;
its run verifies LiteRT fp32 and int8 on the whole test split. The table reads each run's report
and `toolkit benchmark` of its two files: test top-1 per format, the int8 drop, batch-1 latency
(XNNPACK, --threads, in a fresh process),
int8 / fp32 latency, and top-1 per int8 millisecond. Baseline: keras.applications' MobileNetV3-Small
(weights=None) in the same run. Writes its RESULTS.md section.
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


def main(argv):
    p = argparse.ArgumentParser()
    p.add_argument("--backbones", default="edgenet_lite,edgenet,mobilenetv3_small")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--output", default="saved_models")
    p.add_argument("--reuse", action="store_true", help="read finished runs instead of training again")
    p.add_argument("--threads", type=int, default=1, help="XNNPACK threads for the latency")
    args = p.parse_args(argv)
    rows, figures = [], {}
    for backbone in args.backbones.split(","):
        name = f"edge_{backbone}"
        command = ["toolkit", "run", "classification", "--backbone", backbone, "--image-size", str(args.image_size),
                   "--epochs", str(args.epochs), "--output", args.output, "--name", name, "--verbose", "0"]  # fmt: skip
        report_path = os.path.join(ROOT, args.output, name, "report.json")
        if not (args.reuse and os.path.isfile(report_path)):
            done = subprocess.run([sys.executable, "-m", "toolkit.cli", *command[1:]], cwd=ROOT, capture_output=True,
                                  text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))  # fmt: skip
            if done.returncode != 0:
                sys.exit(f"{shlex.join(command)} failed:\n{done.stderr[-3000:]}")
        with open(report_path) as f:
            report = json.load(f)
        # Latency from `toolkit benchmark` in a fresh process: timed at the end of a training process,
        # the same files measure 2-5x slower (TensorFlow's pools and tf.data threads are still there).
        run_dir = os.path.join(args.output, name)
        bench = [sys.executable, "-m", "toolkit.cli", "benchmark", run_dir, "--formats", "tflite_fp32,tflite_int8",
                 "--threads", str(args.threads)]  # fmt: skip
        done = subprocess.run(bench, cwd=ROOT, capture_output=True, text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
        if done.returncode != 0:
            sys.exit(f"{shlex.join(bench)} failed:\n{done.stderr[-3000:]}")
        with open(os.path.join(ROOT, run_dir, "benchmark.json")) as f:
            formats = json.load(f)["formats"]
        keras_top1, fp32, int8 = formats["keras"]["top1"], formats["tflite_fp32"], formats["tflite_int8"]
        figures[backbone] = (int8["top1"], int8["latency_ms"])
        rows.append(
            f"| {backbone} | {report['params'] / 1e6:.2f} M | {report['flops'] / 1e6:.1f} | {report['train_seconds']:.0f} | "
            f"{keras_top1:.4f} | {fp32['top1']:.4f} | {int8['top1']:.4f} | {(fp32['top1'] - int8['top1']) * 100:+.2f} | "
            f"{fp32['latency_ms']:.3f} | {int8['latency_ms']:.3f} | {int8['latency_ms'] / fp32['latency_ms']:.2f}x | "
            f"{int8['top1'] / int8['latency_ms']:.1f} |"
        )
        print(rows[-1], flush=True)
    checks = []
    if "edgenet_lite" in figures and "mobilenetv3_small" in figures:
        (lite_top1, lite_ms), (mnv3_top1, mnv3_ms) = figures["edgenet_lite"], figures["mobilenetv3_small"]
        checks.append(("edgenet_lite: higher int8 top-1 and lower int8 latency than mobilenetv3_small",
                       f"{lite_top1:.4f} at {lite_ms:.3f} ms vs {mnv3_top1:.4f} at {mnv3_ms:.3f} ms",
                       lite_top1 >= mnv3_top1 and lite_ms <= mnv3_ms))  # fmt: skip
    body = "\n".join([
        "## Edge backbones on the same data and budget (issue 19): accuracy against int8 milliseconds",
        "",
        f"Command: `{shlex.join(['python', 'benchmarks/edge_backbone.py', *argv])}` ({time.strftime('%Y-%m-%d')}, "
        f"load average {os.getloadavg()[0]:.2f} after it): `toolkit run classification --backbone B --image-size "
        f"{args.image_size} --epochs {args.epochs}` for each B, Fashion-MNIST, the recipe's other defaults. Latency: "
        f"`toolkit benchmark` of the run's fp32 and int8 files, batch 1, XNNPACK, {args.threads} thread(s). Baseline: "
        "keras.applications' MobileNetV3-Small in the same run.",
        "",
        *(["| target | measured | met |", "|---|---|---|"]
          + [f"| {n} | {v} | {'yes' if ok else '**no**'} |" for n, v, ok in checks] + [""] if checks else []),
        "| backbone | params | MFLOPs | train s | Keras top-1 | fp32 top-1 | int8 top-1 | int8 drop (pt) | fp32 ms | "
        "int8 ms | int8 / fp32 | int8 top-1 per ms |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
        *rows,
    ])  # fmt: skip
    update_section("edge_backbone", body)
    print(body)


if __name__ == "__main__":
    main(sys.argv[1:])
