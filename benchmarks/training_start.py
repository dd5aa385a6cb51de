"""How long a training waits before its first step: the traced train step, with every task's schedule.

    python benchmarks/training_start.py [--repeats 2]

Keras' TensorFlow AdamW reads its learning rate once per variable for weight decay. With Keras'
CosineDecay and warm-up (the baseline, in the same run), each read builds the schedule, a `cond` of
two function graphs among it, into the traced step; `toolkit.tasks.registry.WarmupCosineDecay` (what
every task compiles with) gives the same values and is built once per traced step. Measured: the
first `model.fit` step (tracing, graph optimisation and one step) of the default classifier and of
the default detector, each model fresh, the two schedules alternating. Random images: the time does
not depend on them.
"""

import argparse
import os
import shlex
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.results import machine, update_section  # noqa: E402
from toolkit.tasks import classification, detection, registry  # noqa: E402


OURS = registry.warmup_cosine  # what every task's compile calls (the benchmark swaps it with the baseline)


def keras_cosine(learning_rate, total_steps, warmup_fraction=0.05):
    """The baseline: the same schedule (the same config) as Keras' own CosineDecay with warm-up."""
    ours = OURS(learning_rate, total_steps, warmup_fraction)
    return keras.optimizers.schedules.CosineDecay.from_config(ours.get_config())


def classifier():
    model = classification.build("resnet", (56, 56, 1), 10)
    classification.compile(model, 4e-3, 1000)
    x = np.random.default_rng(0).random((128, 56, 56, 1)).astype("float32") * 255
    return model, x, np.arange(128) % 10, 128


def detector():
    model = detection.build("resnet", (128, 128, 1), 10)
    detection.compile(model, 2e-3, 1000)
    rng = np.random.default_rng(0)
    boxes = np.tile(np.array([[[10.0, 10.0, 40.0, 50.0]]], np.float32), (32, 1, 1))
    classes = rng.integers(0, 10, (32, 1)).astype("int32")
    x = rng.random((32, 128, 128, 1)).astype("float32") * 255
    return model, x, detection.encode_targets(boxes, classes, (128, 128, 1), 10), 32


def main(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args(argv)
    rows = []
    for name, make in (("classification (resnet, 56 px)", classifier), ("detection (resnet, 128 px)", detector)):
        seconds = {"keras": [], "ours": []}
        for _ in range(args.repeats):
            for which, schedule in (("keras", keras_cosine), ("ours", OURS)):
                registry.warmup_cosine = schedule  # what each task's compile calls
                keras.utils.set_random_seed(0)
                model, x, y, batch = make()
                start = time.perf_counter()
                model.fit(x, y, batch_size=batch, epochs=1, verbose=0)  # one step
                seconds[which].append(time.perf_counter() - start)
                print(name, which, f"{seconds[which][-1]:.2f} s", flush=True)
        registry.warmup_cosine = OURS
        rows.append((name, len(model.trainable_variables), seconds))
    lines = [
        "## Training start: the first step of every recipe, with its learning-rate schedule",
        "",
        f"Command: `{shlex.join(['python', 'benchmarks/training_start.py', *argv])}`",
        f"({machine()}). The first `model.fit` step of a fresh model (tracing, graph optimisation, one",
        "step), Keras' CosineDecay with warm-up (the baseline) and `WarmupCosineDecay` alternating; seconds,",
        "each try in order:",
        "",
        "| model | trainable variables | Keras' CosineDecay | WarmupCosineDecay | saved |",
        "|---|---|---|---|---|",
    ]
    for name, count, seconds in rows:
        keras_s, ours_s = np.median(seconds["keras"]), np.median(seconds["ours"])
        lines.append(f"| {name} | {count} | {', '.join(f'{s:.1f}' for s in seconds['keras'])} | "
                     f"{', '.join(f'{s:.1f}' for s in seconds['ours'])} | {keras_s - ours_s:.1f} s "
                     f"({1 - ours_s / keras_s:.0%}) |")  # fmt: skip
    update_section("training_start", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main(sys.argv[1:])
