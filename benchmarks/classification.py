"""Classification benchmark: the default recipe against the issue's targets, on this machine.

    python benchmarks/classification.py [--epochs N] [extra recipe flags]

1. Runs the default recipe (Fashion-MNIST, full train/test) and reads its report.json:
   test top-1 per format, training time, LiteRT int8 vs fp32 latency and size.
2. Input pipeline overhead: the recipe's tf.data pipeline against a bare model.fit on the same
   data held in memory as numpy arrays (the baseline), same model, same batch size, in this run;
   images/s over epochs 2-3 of each (the first one pays for tracing).
Writes its section of benchmarks/RESULTS.md.
"""

import os
import platform
import shlex
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.results import update_section  # noqa: E402
from recipes import classification as recipe  # noqa: E402
from toolkit.data import images  # noqa: E402
from toolkit.export.report import format_table  # noqa: E402
from toolkit.tasks import classification  # noqa: E402


class EpochTimes(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.times = getattr(self, "times", []) + [time.perf_counter() - self.start]


def pipeline_overhead(args, data):
    """Images/s over epochs 2-3: recipe pipeline vs bare in-memory model.fit, same model and batch."""
    x, y = data.arrays("train")
    results = {}
    for name in ("bare numpy model.fit", "recipe tf.data pipeline"):
        keras.utils.set_random_seed(0)
        model = classification.build(
            args.backbone, data.image_shape, len(data.class_names), head_dropout=args.head_dropout
        )
        steps = 3 * len(x) // args.batch_size
        classification.compile(model, args.learning_rate, steps, label_smoothing=args.label_smoothing)
        timer = EpochTimes()
        if name.startswith("bare"):
            model.fit(x.astype(np.float32), y, batch_size=args.batch_size, epochs=3, callbacks=[timer], verbose=0)
        else:
            train = images.batches(data.train, args.batch_size, shuffle=True, augment=images.augmentation(args.augment))
            model.fit(train, epochs=3, callbacks=[timer], verbose=0)
        results[name] = 2 * len(x) / sum(timer.times[1:])
    return results


def main(argv):
    command = shlex.join(["python", "benchmarks/classification.py", *argv])
    report = recipe.main(argv)
    args = recipe.parse_args(argv)
    data = recipe.load(args)  # the recipe's splits and input size
    speeds = pipeline_overhead(args, data)
    bare, ours = speeds["bare numpy model.fit"], speeds["recipe tf.data pipeline"]

    f = report["formats"]
    keras_top1, int8, fp32 = f["keras"]["top1"], f["tflite_int8"], f["tflite_fp32"]
    checks = [
        ("test top-1 (Keras) >= 0.935 (issue 17)", f"{keras_top1:.4f}", keras_top1 >= 0.935),
        ("training time <= 300 s", f"{report['train_seconds']:.0f} s", report["train_seconds"] <= 300),
        ("LiteRT int8 top-1 within 0.5 pt of Keras", f"{(keras_top1 - int8['top1']) * 100:+.2f} pt",
         abs(keras_top1 - int8["top1"]) <= 0.005),
        ("LiteRT fp32 max abs diff <= 1e-4", f"{fp32['max_abs_diff']:.2e}", fp32["max_abs_diff"] <= 1e-4),
        ("int8 latency <= 0.5x fp32", f"{int8['latency_ms']:.3f} / {fp32['latency_ms']:.3f} ms = "
         f"{int8['latency_ms'] / fp32['latency_ms']:.2f}x", int8["latency_ms"] <= 0.5 * fp32["latency_ms"]),
        ("int8 file <= 0.3x fp32", f"{int8['size_bytes'] / fp32['size_bytes']:.2f}x",
         int8["size_bytes"] <= 0.3 * fp32["size_bytes"]),
        ("pipeline images/s >= 0.9x bare in-memory fit", f"{ours:.0f} / {bare:.0f} img/s = {ours / bare:.2f}x",
         ours >= 0.9 * bare),
    ]  # fmt: skip
    body = "\n".join(
        [
            "## Classification (issue 2): Fashion-MNIST, default recipe",
            "",
            f"Command: `{command}` ({time.strftime('%Y-%m-%d')}, {platform.processor() or platform.machine()}, "
            f"{os.cpu_count()} cores, Keras backend {report['backend']}).",
            f"Recipe: `{report['command']}`; backbone `{report['backbone']}` {report['backbone_options'] or ''}, "
            f"{report['params']:,} parameters, {report['flops'] / 1e6:.1f} MFLOPs per image, "
            f"{report['epochs_run']} epochs in {report['train_seconds']:.0f} s.",
            "",
            "| target | measured | met |",
            "|---|---|---|",
            *[f"| {name} | {value} | {'yes' if ok else '**no**'} |" for name, value, ok in checks],
            "",
            "Per format, whole test split (10,000 images), batch-1 latency on this CPU:",
            "",
            format_table(report),
            "",
            f"Pipeline baseline: a bare `model.fit` on numpy arrays in memory ({bare:.0f} images/s) vs the recipe's "
            f"tf.data pipeline with its augmentation ({ours:.0f} images/s), same model and batch size, epochs 2-3.",
        ]
    )
    update_section("classification", body)
    print(body)


if __name__ == "__main__":
    main(sys.argv[1:])
