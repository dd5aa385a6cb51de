"""MediaPipe Tasks files of the default classification and detection runs, checked by MediaPipe itself.

    python benchmarks/mediapipe_files.py [--runs saved_models/classification,saved_models/detection] [--reuse]

For each run (trained with its default recipe first unless --reuse finds it), `toolkit mediapipe RUN`
and `toolkit mediapipe RUN --quantization int8` write the MediaPipe file; each is scored on the
run's whole test split (the task metric, and its drop against Keras), run through MediaPipe Tasks'
ImageClassifier / ObjectDetector on 64 test images and compared with LiteRT on the same file, and
timed at batch 1 (XNNPACK, 1 thread, in a fresh process). Baseline: the run's own LiteRT file of
the same quantization (grayscale input, NMS in a WHILE loop), timed in the same process. Also checks
that the run's own files carry TFLite Metadata with their labels. Writes its RESULTS.md section.
"""

import argparse
import json
import os
import shlex
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks.results import machine, update_section  # noqa: E402
from toolkit.runs import MEDIAPIPE_RECORD_FILE  # noqa: E402

TIMING = r"""
import json, sys, numpy as np
from toolkit.export import litert, metadata
sample = np.load(sys.argv[1])
sample = sample[[k for k in sample.files if k.startswith("input__")][0]][:1].astype(np.float32)
out = {}
for path in sys.argv[2:]:
    x = np.repeat(sample, 3, axis=-1) if "mediapipe" in path and sample.shape[-1] == 1 else sample
    out[path] = litert.LiteRTModel(path, threads=1).latency_ms(x)[0]
print("RESULT" + json.dumps(out))
"""


def toolkit(*args):
    done = subprocess.run([sys.executable, "-m", "toolkit.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))  # fmt: skip
    if done.returncode != 0:
        sys.exit(f"toolkit {shlex.join(args)} failed:\n{done.stderr[-3000:]}")
    return done.stdout


def main(argv):
    p = argparse.ArgumentParser()
    p.add_argument("--runs", default="saved_models/classification,saved_models/detection")
    p.add_argument("--reuse", action="store_true", help="use finished runs where they exist")
    args = p.parse_args(argv)
    from toolkit.export import metadata

    lines, targets = [], []
    for run in args.runs.split(","):
        recipe = os.path.basename(run).split("_")[0]
        if not (args.reuse and os.path.isfile(os.path.join(ROOT, run, "report.json"))):
            toolkit("run", recipe, "--output", os.path.dirname(run) or ".", "--name", os.path.basename(run),
                    "--verbose", "0")  # fmt: skip
        with open(os.path.join(ROOT, run, "report.json")) as f:
            report = json.load(f)
        own = {q: os.path.join(ROOT, run, f"model_{q}.tflite") for q in ("fp32", "int8")}
        described = {q: metadata.read(own[q]) for q in own}
        labels_inside = all(d["labels"] for d in described.values())
        targets.append((f"{recipe}: the run's own .tflite files carry their labels and TFLite Metadata",
                        f"{len(described['fp32']['labels'])} labels in each", labels_inside))  # fmt: skip
        for q in ("fp32", "int8"):
            toolkit("mediapipe", run, "--quantization", q)
        with open(os.path.join(ROOT, run, MEDIAPIPE_RECORD_FILE)) as f:
            record = json.load(f)
        files = {q: os.path.join(ROOT, run, "model_mediapipe.tflite" if q == "fp32" else "model_mediapipe_int8.tflite")
                 for q in ("fp32", "int8")}  # fmt: skip
        timing = subprocess.run([sys.executable, "-c", TIMING, os.path.join(ROOT, run, "test_data.npz"),
                                 *own.values(), *files.values()], cwd=ROOT, capture_output=True, text=True)  # fmt: skip
        latency = json.loads(next(line for line in timing.stdout.splitlines() if line.startswith("RESULT"))[6:])
        metric = report["metric"]
        for q in ("fp32", "int8"):
            found = record[os.path.basename(files[q])]
            entry, check = found["entry"], found["mediapipe_check"]
            agreement = check.get("top1_agreement", check.get("identical_detections")) if check else None
            shown = "not run" if check is None else f"{agreement:.1%} of {check['images']} images"
            ours = report["formats"][f"tflite_{q}"][metric]
            lines.append(f"| {recipe} | {os.path.basename(files[q])} | {entry[metric]:.4f} | "
                         f"{entry['drop_points']:+.2f} pt | {ours:.4f} | {shown} | "
                         f"{latency[files[q]]:.3f} ms | {latency[own[q]]:.3f} ms | {entry['size_bytes'] / 1e6:.3f} |")  # fmt: skip
            targets.append((f"{recipe} {q}: MediaPipe Tasks shows what LiteRT computes from the file",
                            "not run: mediapipe is not installed" if check is None else f"{agreement:.1%}",
                            check is not None and agreement == 1.0))  # fmt: skip
            targets.append((f"{recipe} {q}: the MediaPipe file within 1 pt of Keras on the whole test split",
                            f"{entry['drop_points']:+.2f} pt", entry["drop_points"] <= 1.0))  # fmt: skip
    command = "python benchmarks/mediapipe_files.py " + shlex.join(argv)
    body = "\n".join([
        "## MediaPipe Tasks files and self-describing .tflite files (issue 19)",
        "",
        f"Command: `{command.strip()}` ({machine()}). Each run's `toolkit mediapipe RUN [--quantization int8]`: "
        "the trained model with an RGB input (luminance inside for grayscale runs), NMS unrolled to 8 rounds "
        "(one subgraph), MediaPipe's outputs and TFLite Metadata; scored on the run's whole test split, then run "
        "through MediaPipe Tasks (the `mediapipe` package's ImageClassifier / ObjectDetector, verified on this "
        "machine, not only against the schema) on 64 test images and compared with LiteRT on the same file "
        "(detections: same class name, score within 1e-4, box within 2 px, after MediaPipe's merging of "
        "detections that share a box). Baseline: the run's own LiteRT file of the same quantization, timed "
        "in the same fresh process (batch 1, XNNPACK, 1 thread).",
        "",
        "| target | measured | met |",
        "|---|---|---|",
        *[f"| {t} | {m} | {'yes' if ok else '**no**'} |" for t, m, ok in targets],
        "",
        "| run | file | metric (test split) | drop vs Keras | run's own file | MediaPipe = LiteRT | latency | run's own file latency | MB |",
        "|---|---|---|---|---|---|---|---|---|",
        *lines,
    ])  # fmt: skip
    update_section("mediapipe_files", body)
    print(body)


if __name__ == "__main__":
    main(sys.argv[1:])
