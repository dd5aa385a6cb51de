"""Parity of the LiteRT fp32 files with post-processing inside, across kernel paths (issue 14).

    python benchmarks/parity.py [--reuse]

--reuse takes the default detection and multi-task runs it made (saved_models/parity_detection,
parity_multitask: the default recipes under their own names) instead of training them again.

A detector's outputs are padded, score-sorted arrays: two near-equal scores that swap, or one box that
crosses the score threshold, move every later row, so the largest difference between the padded
arrays (the figure RESULTS showed before: 2.3e-5 on one machine, 28.5 on an Intel Xeon for the same
mAP) says nothing about what a user sees. Here, for the default detection and multi-task runs, the
Keras model is run again in a fresh process with TensorFlow's oneDNN kernels on and off (another
kernel path stands in for another CPU) and compared with the run's `model_fp32.tflite`:

- identical detections: share of detections (Keras' and LiteRT's) matched one to one with the same
  class and IoU >= 0.99 (`tasks.detection.compare`), and the largest difference over matched pairs;
- raw maps: the model up to its post-processing (heatmap, edges...), where no order can change;
- the padded-array max abs diff, for contrast, and the task metric of both.
No time figure is taken here. Writes the `parity` section of benchmarks/RESULTS.md.
"""

import json
import os
import shlex
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from benchmarks.results import OUTPUT, machine, run_or_reuse, update_section  # noqa: E402

RUNS = {"parity_detection": ("detection", "map"), "parity_multitask": ("multitask", "map")}  # run -> (task, metric)


def measure(run, task):
    """In this process (oneDNN as the environment sets it): the comparison figures, as a dict."""
    import numpy as np

    from toolkit.export import litert, pipeline

    run_dir = os.path.join(OUTPUT, run)
    module = pipeline.task_of(task)
    model, inputs, _, labels, stored = pipeline.load_test_data(run_dir)
    keras = pipeline.keras_outputs(model, inputs)
    lite = pipeline.named_like(
        litert.LiteRTModel(os.path.join(run_dir, pipeline.tflite_file("tflite_fp32"))).predict(pipeline.feed(inputs)),
        keras,
    )
    figures = {
        **{f"keras_{k}": float(v) for k, v in module.score(keras, labels).items() if np.isscalar(v)},
        **{f"tflite_{k}": float(v) for k, v in module.score(lite, labels).items() if np.isscalar(v)},
        "padded_max_abs_diff": pipeline.max_abs_diff(lite, keras),
        "keras_vs_stored": module.compare(keras, stored),
        **module.compare(lite, keras),
        "raw_max_abs_diff": pipeline.raw_maps_diffs(run_dir, module.raw_model(model), inputs),
    }
    return figures


def main(argv):
    if argv[:1] == ["--measure"]:
        print("FIGURES " + json.dumps(measure(*argv[1:3])))
        return
    command = shlex.join(["python", "benchmarks/parity.py", *argv])
    reuse = "--reuse" in argv
    from recipes import detection, multitask

    recipes = {"detection": detection, "multitask": multitask}  # own run names: their times are not figures
    rows, reports = [], {}
    for run, (task, metric) in RUNS.items():
        reports[run] = run_or_reuse(run, reuse, lambda: recipes[task].main(["--name", run, "--verbose", "2"]))
        for onednn in ("1", "0"):
            env = dict(os.environ, TF_ENABLE_ONEDNN_OPTS=onednn)
            done = subprocess.run([sys.executable, __file__, "--measure", run, task], env=env, capture_output=True,
                                  text=True)  # fmt: skip
            found = [line for line in done.stdout.splitlines() if line.startswith("FIGURES ")]
            if done.returncode or not found:
                raise SystemExit(f"measuring {run} with oneDNN {onednn} failed:\n{done.stderr[-3000:]}")
            f = json.loads(found[0][len("FIGURES "):])
            rows.append(
                f"| {run} | {'on' if onednn == '1' else 'off'} | {f['identical_detections']:.4f} | "
                f"{f['max_abs_diff']:.1e} | {', '.join(f'{k} {v:.1e}' for k, v in f['raw_max_abs_diff'].items())} | "
                f"{f['padded_max_abs_diff']:.3g} | "
                f"{f['keras_' + metric]:.4f} | {f['tflite_' + metric]:.4f} | "
                f"{f['keras_vs_stored']['identical_detections']:.4f} |"
            )
            print(rows[-1], flush=True)
    lines = [
        "## Parity of the LiteRT fp32 files across kernel paths (issue 14)",
        "",
        f"Command: `{command}` ({time.strftime('%Y-%m-%d')}, {machine()}; no time figure is taken here).",
        "Runs: " + "; ".join(f"`{r['command']}`" for r in reports.values()) + ". Whole test split "
        f"({reports['parity_detection']['split_sizes']['test']:,} scenes each). The Keras model is run again in a fresh "
        "process with TensorFlow's oneDNN kernels on and off and compared with the run's `model_fp32.tflite` "
        "(decoding and NMS inside). *identical*: share of detections matched one to one (same class, IoU >= 0.99); "
        "*matched diff*: largest difference over matched pairs (boxes in pixels, scores); *raw maps*: the model up "
        "to its post-processing, where no order can change, per map (heatmap: probabilities; edges: pixels); *padded diff*: the largest difference between the "
        "padded, score-sorted output arrays, the figure reported before, for contrast; *vs run*: identical "
        "detections between this process's Keras outputs and those the run stored.",
        "",
        "| run | oneDNN | identical | matched diff | raw maps | padded diff | Keras mAP | LiteRT fp32 mAP | vs run |",
        "|---|---|---|---|---|---|---|---|---|",
        *rows,
    ]
    body = "\n".join(lines)
    update_section("parity", body)
    print(body)


if __name__ == "__main__":
    main(sys.argv[1:])
