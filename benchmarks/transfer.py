"""Transfer benchmark: each vision task from scratch and from the pretrained backbone preset, same budget.

    python benchmarks/transfer.py [--reuse] [--tasks detection,segmentation,classification,multitask,sentiment]

1. `toolkit pretrain vision` / `toolkit pretrain text` with their defaults (saved_models/pretrain_*), timed.
2. For each task, its recipe with its default budget twice: from scratch with the preset's backbone
   and options (saved_models/<task>_scratch), and from the preset (saved_models/<task>_pretrained).
   The same data, seed, epochs, batch size and learning rate; only the starting weights differ.
3. The test metric of Keras and of the quantized LiteRT file for both, the training time, the gain.
--reuse takes runs this script made earlier from saved_models/ instead of training them again.
Writes the `transfer` section of benchmarks/RESULTS.md. One job at a time on an idle machine.
"""

import os
import shlex
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from benchmarks.results import OUTPUT, machine, run_or_reuse, update_section  # noqa: E402

# task: (its metric, the pretraining whose preset it starts from, whether lower is better)
TASKS = {
    "detection": ("map", "vision", False),
    "segmentation": ("miou", "vision", False),
    "classification": ("top1", "vision", False),
    "multitask": ("mean_head_score", "vision", False),
    "sentiment": ("accuracy", "text", False),
    "generation": ("perplexity", "text", True),
}


def pretrain(kind, reuse):
    """The preset of `toolkit pretrain KIND` with its defaults (saved_models/pretrain_KIND)."""
    import importlib

    from toolkit.backbones import presets

    path = os.path.join(OUTPUT, f"pretrain_{kind}")
    if not (reuse and presets.is_preset(path)):
        importlib.import_module(f"recipes.pretrain_{kind}").main(["--output", OUTPUT, "--verbose", "2"])
    return presets.read(path)


def task_run(task, name, flags, reuse):
    import importlib

    module = importlib.import_module(f"recipes.{task}")
    return run_or_reuse(name, reuse, lambda: module.main([*flags, "--name", name, "--output", OUTPUT, "--verbose", "2"]))


def headline(task, report):
    """(metric name, Keras figure, the quantized LiteRT file's figure) of a run. Generation: perplexity
    over the same run's best Kneser-Ney (a preset brings its own WordPieces, and perplexities over two
    vocabularies do not compare; each one's ratio to the n-gram on the same tokens does)."""
    metric = TASKS[task][0]
    formats = report["formats"]
    if task == "generation":
        kneser_ney = report["baselines"]["kneser_ney"]["perplexity"]
        return ("perplexity / Kneser-Ney", formats["keras"][metric] / kneser_ney,
                formats["tflite_dynamic"][metric] / kneser_ney)  # fmt: skip
    quantized = next((f for f in ("tflite_int8", "tflite_dynamic") if f in formats), None)
    return metric, formats["keras"].get(metric), formats[quantized].get(metric) if quantized else None


def preset_summary(kind, preset):
    meta = preset.metadata
    seen = f"{meta['scenes_seen']:,} fresh scenes" if "scenes_seen" in meta else f"{meta['tokens']['train']:,} tokens"
    figures = ", ".join(f"{k} {v:.4f}" for k, v in sorted(meta["validation"].items()) if "loss" not in k)
    return (f"`toolkit pretrain {kind}` ({meta['backbone']} {preset.options}, {meta['parameter_count']:,} parameters): "
            f"{seen}, {meta['epochs_run']} epochs in {meta['train_seconds']:.0f} s; validation {figures}.")  # fmt: skip


def main(argv):
    command = shlex.join(["python", "benchmarks/transfer.py", *argv])
    reuse = "--reuse" in argv
    tasks = ("detection", "segmentation")
    if "--tasks" in argv:
        tasks = tuple(argv[argv.index("--tasks") + 1].split(","))
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        raise SystemExit(f"unknown task {unknown[0]!r}; tasks: {', '.join(TASKS)}")
    found = {kind: pretrain(kind, reuse) for kind in dict.fromkeys(TASKS[t][1] for t in tasks)}
    rows = []
    for task in tasks:
        kind = TASKS[task][1]
        preset = found[kind]
        same = {k: v for k, v in preset.options.items() if k != "vocabulary_size"}  # text: the run's own vocabulary
        options = sum((["--backbone-option", f"{k}={v!r}"] for k, v in same.items()), [])
        scratch = task_run(task, f"{task}_scratch", ["--backbone", preset.backbone, *options], reuse)
        pretrained = task_run(task, f"{task}_pretrained", ["--backbone-preset", preset.path], reuse)
        rows.append((task, scratch, pretrained))
    lines = [f"Command: `{command}` ({machine()}).", ""]
    lines += [f"Preset: {preset_summary(kind, preset)}" for kind, preset in found.items()]
    lines += [
        "",
        "| task | metric | from scratch | from the preset | gain | quantized scratch / preset | epochs run | "
        "train s scratch / preset |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for task, scratch, pretrained in rows:
        metric, keras_a, quantized_a = headline(task, scratch)
        _, keras_b, quantized_b = headline(task, pretrained)
        lower = TASKS[task][2]
        gain = f"{(keras_a - keras_b) / keras_a:+.1%} lower" if lower else f"{100 * (keras_b - keras_a):+.1f} pt"
        lines.append(
            f"| {task} | {metric} | {keras_a:.4f} | {keras_b:.4f} | {gain} | {quantized_a:.4f} / {quantized_b:.4f} | "
            f"{scratch['epochs_run']} / {pretrained['epochs_run']} | "
            f"{scratch['train_seconds']:.0f} / {pretrained['train_seconds']:.0f} |"
        )
    lines += [
        "",
        "Each task's recipe with its defaults, twice: from scratch with the preset's backbone and options, and "
        "from the preset (`--backbone-preset`); the same data, seed, epochs, batch size and learning rate. A text "
        "preset brings its vocabulary; the scratch run learns its own on the task's training text. Test split, "
        "scored once. Quantized: the int8 LiteRT file (dynamic-range where the task has no int8 file).",
    ]
    body = "## Transfer from the pretrained backbone presets (issues 17, 18)\n\n" + "\n".join(lines)
    update_section("transfer", body)
    print(body)
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
