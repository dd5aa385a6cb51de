"""Generation benchmark: the default language-model recipe against the issue's targets.

    python benchmarks/generation.py [extra recipe flags]

Runs the default recipe (Python's pydoc topics, causal GRU), reads its report.json: held-out
perplexity per format (through the exported one-token step) against the interpolated Kneser-Ney
baseline on the same tokens (order chosen on validation), training time, whether LiteRT's greedy
continuations (50 tokens from 20 test prompts) equal Keras', per-token latency. Writes RESULTS.md.
"""

import os
import platform
import shlex
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from benchmarks.results import update_section  # noqa: E402
from recipes import generation as recipe  # noqa: E402
from toolkit.export.report import format_table  # noqa: E402


def main(argv):
    command = shlex.join(["python", "benchmarks/generation.py", *argv])
    report = recipe.main(argv)
    args = recipe.parse_args(argv)
    f = report["formats"]
    keras, fp32 = f["keras"], f["tflite_fp32"]
    baseline = report["baselines"]["kneser_ney"]
    ratio = keras["perplexity"] / baseline["perplexity"]
    checks = [
        ("held-out perplexity >= 20% below the n-gram baseline",
         f"{keras['perplexity']:.2f} vs Kneser-Ney {baseline['order']}-gram {baseline['perplexity']:.2f} "
         f"({(ratio - 1) * 100:+.1f}%)", ratio <= 0.8),
        ("training time <= 600 s", f"{report['train_seconds']:.0f} s", report["train_seconds"] <= 600),
        (f"LiteRT fp32 greedy continuation identical to Keras ({args.new_tokens} tokens, {args.prompts} prompts)",
         f"{fp32['identical_to_keras']:.2f} of prompts", fp32["identical_to_keras"] == 1.0),
        ("LiteRT per-token decode latency recorded", f"{fp32['latency_ms']:.3f} ms/token (batch 1)", True),
    ]  # fmt: skip
    notes = []
    if ratio > 0.8:
        history = report["history"]["val_loss"]
        notes.append(
            f"Perplexity target not met in this run ({report['epochs_run']} epochs of the recipe's {args.epochs}; "
            f"validation loss by epoch {', '.join(f'{v:.3f}' for v in history)}). What would reach it, not measured "
            "here: more epochs at the default (10) on an uncontended CPU, a wider or deeper GRU, and evaluating with "
            "the state carried across windows (both models are limited to in-window context here). pydoc's text "
            "repeats whole phrases, which a high-order Kneser-Ney recalls exactly (see its validation perplexity "
            "by order)."
        )
    by_order = ", ".join(f"{n}: {p:.2f}" for n, p in baseline["validation_perplexity_by_order"].items())
    body = "\n".join(
        [
            "## Generation (issue 6): causal language model on Python's documentation, default recipe",
            "",
            f"Command: `{command}` ({time.strftime('%Y-%m-%d')}, {platform.processor() or platform.machine()}, "
            f"{os.cpu_count()} cores shared with other engineers' training jobs (times are inflated by "
            f"contention), Keras backend {report['backend']}).",
            f"Recipe: `{report['command']}`; backbone `{report['backbone']}` {report['backbone_options'] or ''}, "
            f"{report['params']:,} parameters, windows of {report['sequence_length']} tokens, "
            f"{report['vocabulary_size']} WordPieces from the training text; {report['epochs_run']} epochs in "
            f"{report['train_seconds']:.0f} s. Tokens per split (paragraphs split by text): {report['split_sizes']}.",
            "",
            "| target | measured | met |",
            "|---|---|---|",
            *[f"| {name} | {value} | {'yes' if ok else '**no**'} |" for name, value, ok in checks],
            "",
            "Per format: perplexity on every test window (the step driven over it, zero state at each window's "
            "start; the n-gram sees the same in-window context), latency = one step, batch 1:",
            "",
            format_table(report),
            "",
            f"Baseline: interpolated Kneser-Ney on the same WordPiece ids, order chosen on validation "
            f"(validation perplexity by order: {by_order}); teacher-forced Keras perplexity "
            f"{report['teacher_forced_perplexity']:.2f} (equal to the step loop's).",
            "",
            "| prompt | greedy continuation (LiteRT = Keras) |",
            "|---|---|",
            *[f"| {s['prompt']} | {s['greedy continuation']} |".replace("\n", " ") for s in report["samples"][:4]],
            "",
            *notes,
        ]
    )
    update_section("generation", body)
    print(body)


if __name__ == "__main__":
    main(sys.argv[1:])
