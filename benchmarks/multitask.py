"""Multi-task benchmark: one backbone + three heads in one LiteRT file against the three single-task models.

    python benchmarks/multitask.py [--reuse] [recipe flags for the multi-task run]

--reuse takes earlier runs from saved_models/ (single_detection, single_segmentation,
single_classification, multitask) instead of training them again. Every run uses the same backbone,
options, data and number of epochs (the multi-task run's); the default detection and segmentation
runs are taken as the single-task models when they were trained for that many epochs.

1. Single-task models: the detection recipe, the segmentation recipe and the multi-task recipe with the
   classification head only (`--heads classification`: the presence head on its own backbone).
2. The multi-task model (every head, one backbone), trained jointly.
3. Per head: the test metric of the multi-task model against its single-task model (Keras and LiteRT
   int8). Batch-1 latency of the one multi-task file against the sum of the three single-task files,
   re-timed here back to back on the same stored test image (fp32 and int8), and total file size.
Writes the `multitask` section of benchmarks/RESULTS.md.
"""

import os
import shlex
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from benchmarks.results import OUTPUT, load_report, machine, run_or_reuse  # noqa: E402
from recipes import detection as detection_recipe  # noqa: E402
from recipes import multitask as recipe  # noqa: E402
from recipes import segmentation as segmentation_recipe  # noqa: E402

METRICS = {"detection": "map", "segmentation": "miou", "classification": "presence_exact"}




def timed(run, fmt, sample):
    from toolkit.export import litert

    path = os.path.join(OUTPUT, run, f"model_{fmt}.tflite")
    return litert.LiteRTModel(path).latency_ms(sample)[0], litert.size_bytes(path)


def main(argv):
    import numpy as np

    from benchmarks.results import update_section

    reuse = "--reuse" in argv
    command = shlex.join(["python", "benchmarks/multitask.py", *argv])
    argv = [a for a in argv if a != "--reuse"]
    epochs = recipe.parse_args(argv).epochs
    common = ["--verbose", "2", "--epochs", str(epochs)]

    def single(head, main, *flags):
        """The head's single-task run: the recipe's default run when it had as many epochs, else its own."""
        default = load_report(head) if reuse and head != "classification" else None
        if default is not None and default.get("epochs") == epochs:
            return head, default
        name = f"single_{head}"
        return name, run_or_reuse(name, reuse, lambda: main([*flags, "--name", name, *common]))

    singles = {
        "detection": single("detection", detection_recipe.main),
        "segmentation": single("segmentation", segmentation_recipe.main),
        "classification": single("classification", recipe.main, "--heads", "classification"),
    }
    runs = {head: name for head, (name, _) in singles.items()}
    singles = {head: found for head, (_, found) in singles.items()}
    joint = run_or_reuse("multitask", reuse, lambda: recipe.main(argv + common))
    sample = np.load(os.path.join(OUTPUT, "multitask", "test_data.npz"))["input__image"][:1].astype(np.float32)

    rows, checks = [], []
    for head, metric in METRICS.items():
        single, multi = singles[head]["formats"], joint["formats"]
        drop = (single["keras"][metric] - multi["keras"][metric]) * 100
        rows.append(f"| {head} ({metric}) | {single['keras'][metric]:.4f} | {multi['keras'][metric]:.4f} | "
                    f"{-drop:+.2f} pt | {single['tflite_int8'][metric]:.4f} | {multi['tflite_int8'][metric]:.4f} |")
        checks.append((f"{head} head within 2 pt of its single-task model", f"{-drop:+.2f} pt", drop <= 2))
    timing = {}
    for fmt in ("fp32", "int8"):
        single = [timed(run, fmt, sample) for run in runs.values()]
        timing[fmt] = (timed("multitask", fmt, sample), sum(t for t, _ in single), sum(s for _, s in single), single)
    (multi_ms, multi_size), sum_ms, sum_size, single = timing["int8"]
    checks += [
        ("batch-1 latency <= 0.7x the sum of the single-task files (int8)",
         f"{multi_ms:.2f} ms vs {sum_ms:.2f} ms = {multi_ms / sum_ms:.2f}x", multi_ms <= 0.7 * sum_ms),
        ("file size <= 0.7x their sum (int8)",
         f"{multi_size / 1e6:.3f} MB vs {sum_size / 1e6:.3f} MB = {multi_size / sum_size:.2f}x",
         multi_size <= 0.7 * sum_size),
    ]  # fmt: skip
    lines = [
        "## Multi-task (issue 4): one backbone, three heads, one LiteRT file",
        "",
        f"Command: `{command}` ({time.strftime('%Y-%m-%d')}, {machine()}; Keras backend {joint['backend']}). "
        "Latencies were re-timed back to back in this script.",
        f"Multi-task recipe: `{joint['command']}`; {joint['params']:,} parameters, {joint['flops'] / 1e6:.0f} MFLOPs, "
        f"{joint['epochs_run']} epochs in {joint['train_seconds']:.0f} s. Outputs of the one file: "
        f"{', '.join(joint['outputs'])}. Single-task runs: "
        + "; ".join(f"`{singles[h]['command']}` ({singles[h]['params']:,} parameters, "
                    f"{singles[h]['train_seconds']:.0f} s)" for h in METRICS)
        + ".",
        "",
        "| target | measured | met |",
        "|---|---|---|",
        *[f"| {name} | {value} | {'yes' if ok else '**no**'} |" for name, value, ok in checks],
        "",
        "Per head, whole test split:",
        "",
        "| head (metric) | single-task Keras | multi-task Keras | difference | single-task int8 | multi-task int8 |",
        "|---|---|---|---|---|---|",
        *rows,
        "",
        "Batch-1 latency (XNNPACK, 2 threads) and size per file:",
        "",
        "| format | multi-task ms | sum of single-task ms (det + seg + cls) | multi-task MB | sum of single-task MB |",
        "|---|---|---|---|---|",
        *[f"| {fmt} | {m[0]:.2f} | {s:.2f} ({' + '.join(f'{t:.2f}' for t, _ in parts)}) | {m[1] / 1e6:.3f} | "
          f"{size / 1e6:.3f} |" for fmt, (m, s, size, parts) in timing.items()],
    ]  # fmt: skip
    body = "\n".join(lines)
    update_section("multitask", body)
    print(body)


if __name__ == "__main__":
    main(sys.argv[1:])
