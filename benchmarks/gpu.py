"""benchmarks/gpu.sh's measuring part: one epoch of each image recipe per backend on the GPU.

    python benchmarks/gpu.py [--recipes classification,...] [--backends tensorflow,jax] [--output DIR]

For each backend, a subprocess first asks it how many GPUs it sees; a backend that sees none is a
row saying so (CPU builds of TensorFlow and JAX see none). Each recipe then runs with its defaults for
one epoch (`toolkit run R --epochs 1`), and with --distribute when the backend sees 2 or more GPUs.
Throughput is the run's own images_per_second (report.json: training images over the epoch's wall
time, tracing included, so one epoch understates a long run). Baseline: the same figure of the CPU
run of that recipe in saved_models/ (its default epochs), named with its machine in the table.
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

PROBE = {
    "tensorflow": "import tensorflow as tf; print(len(tf.config.list_physical_devices('GPU')))",
    "jax": "import jax\ntry:\n    print(len(jax.devices('gpu')))\nexcept RuntimeError:\n    print(0)",
}


def gpus_seen(backend):
    done = subprocess.run([sys.executable, "-c", PROBE[backend]], capture_output=True, text=True,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))  # fmt: skip
    try:
        return int(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return 0


def one_epoch(recipe, backend, output, distribute):
    command = [sys.executable, "-m", "toolkit.cli", "run", recipe, "--epochs", "1", "--output", output]
    command += ["--distribute"] if distribute else []
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True,
                          env=dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3"))  # fmt: skip
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
        return {"status": f"failed: {lines[-1][:160] if lines else done.returncode}", "seconds": seconds}
    with open(os.path.join(output, recipe, "report.json")) as f:
        report = json.load(f)
    return {"status": "passed", "seconds": seconds, "images_per_second": report.get("images_per_second"),
            "metric": report["metric"], "score": report["formats"]["keras"][report["metric"]]}  # fmt: skip


def cpu_figure(recipe):
    path = os.path.join(ROOT, "saved_models", recipe, "report.json")
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f).get("images_per_second")


def main(argv):
    p = argparse.ArgumentParser()
    p.add_argument("--recipes", default="classification,detection,segmentation,multitask")
    p.add_argument("--backends", default="tensorflow,jax")
    p.add_argument("--output", default="/tmp/toolkit-gpu")
    args = p.parse_args(argv)
    rows = []
    for backend in args.backends.split(","):
        count = gpus_seen(backend)
        if count == 0:
            rows.append(f"| {backend} | all | | no GPU visible to {backend} (a CPU build?) | | | |")
            continue
        for recipe in args.recipes.split(","):
            for distribute in (False, True) if count >= 2 else (False,):
                name = f"{backend}{'-distribute' if distribute else ''}"
                found = one_epoch(recipe, backend, os.path.join(args.output, name), distribute)
                cpu = cpu_figure(recipe)
                speed = found.get("images_per_second")
                ratio = f"{speed / cpu:.1f}x" if speed and cpu else ""
                rows.append(f"| {backend} | {recipe} | {'yes' if distribute else 'no'} ({count} GPU) | {found['status']} "
                            f"| {speed or 0:.0f} | {cpu or 0:.0f} | {ratio} |")  # fmt: skip
                print(rows[-1], flush=True)
    body = "\n".join([
        "## GPU (issue 19): one epoch of each image recipe, TensorFlow and JAX",
        "",
        f"Command: `{shlex.join(['benchmarks/gpu.sh', *argv])}` ({time.strftime('%Y-%m-%d')}). Throughput: "
        "training images per second over the epoch (tracing included). CPU: the recipe's run in saved_models/.",
        "",
        "| backend | recipe | --distribute | status | GPU img/s | CPU img/s | GPU / CPU |",
        "|---|---|---|---|---|---|---|",
        *rows,
    ])  # fmt: skip
    update_section("gpu", body)
    print(body)


if __name__ == "__main__":
    main(sys.argv[1:])
