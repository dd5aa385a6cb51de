"""Sentiment benchmark: the default recipe against the issue's targets, on this machine.

    python benchmarks/sentiment.py [extra recipe flags]

1. Runs the default recipe (Rotten Tomatoes, bidirectional GRU) and reads its report.json:
   test accuracy and F1 per format, training time, LiteRT parity.
2. Baselines in the same run (the recipe trains them; report.json `baselines`): NBSVM-bi (Wang &
   Manning 2012; word uni+bigrams, scikit-learn) and a bag-of-WordPieces classifier (embedding,
   masked mean, softmax: fastText-style) on the same tokens, vocabulary, splits and budget.
3. End-to-end `predict` of one sentence on the LiteRT file: tokenise + invoke, median over
   repeated calls (what `toolkit predict sentiment` does per text, minus start-up).
Writes its section of benchmarks/RESULTS.md.
"""

import os
import platform
import shlex
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from benchmarks.results import update_section  # noqa: E402
from recipes import sentiment as recipe  # noqa: E402
from toolkit.export.litert import median_latency_ms  # noqa: E402
from toolkit.export.report import format_table  # noqa: E402
from toolkit.predict import SentimentPredictor  # noqa: E402


def main(argv):
    command = shlex.join(["python", "benchmarks/sentiment.py", *argv])
    report = recipe.main(argv)
    args = recipe.parse_args(argv)
    baselines = {k: v for k, v in report["baselines"].items() if not k.endswith("_C")}
    best_baseline = max(baselines, key=baselines.get)

    run = os.path.join(args.output, args.name)
    sentence = "A gripping, beautifully acted film that never quite earns its ending."
    predict = {}
    for fmt in ("tflite_fp32", "tflite_dynamic", "tflite_int8"):
        predictor = SentimentPredictor(run, fmt)
        predict[fmt] = median_latency_ms(lambda s: predictor([s]), sentence)

    f = report["formats"]
    acc, fp32 = f["keras"]["accuracy"], f["tflite_fp32"]
    quantized = {k: f[k]["accuracy"] for k in ("tflite_dynamic", "tflite_int8")}
    best_quantized = min(quantized, key=lambda k: abs(acc - quantized[k]))
    checks = [
        ("test accuracy (Keras) >= 0.78", f"{acc:.4f}", acc >= 0.78),
        ("test accuracy at or above the best baseline in the same run (issue 18)",
         f"{acc:.4f} vs {best_baseline} {baselines[best_baseline]:.4f}", acc >= baselines[best_baseline]),
        ("training time <= 300 s", f"{report['train_seconds']:.0f} s", report["train_seconds"] <= 300),
        ("LiteRT quantized accuracy within 1 pt of Keras",
         ", ".join(f"{k} {(acc - v) * 100:+.2f} pt" for k, v in quantized.items()),
         abs(acc - quantized[best_quantized]) <= 0.01),
        ("LiteRT fp32 max abs diff <= 1e-4", f"{fp32['max_abs_diff']:.2e}", fp32["max_abs_diff"] <= 1e-4),
        ("predict one sentence (tokenise + invoke) <= 5 ms median",
         ", ".join(f"{k} {v[0]:.2f} ms" for k, v in predict.items()), predict["tflite_dynamic"][0] <= 5),
    ]  # fmt: skip
    body = "\n".join(
        [
            "## Sentiment (issue 5): Rotten Tomatoes critic snippets, default recipe",
            "",
            f"Command: `{command}` ({time.strftime('%Y-%m-%d')}, {platform.processor() or platform.machine()}, "
            f"{os.cpu_count()} cores, Keras backend {report['backend']}).",
            f"Recipe: `{report['command']}`; backbone `{report['backbone']}` {report['backbone_options'] or ''}, "
            f"{report['params']:,} parameters, {report['flops'] / 1e6:.1f} MFLOPs per text, sequence length "
            f"{report['sequence_length']}, {report['vocabulary_size']} WordPieces learned from the training split, "
            f"{report['epochs_run']} epochs in {report['train_seconds']:.0f} s. Splits (by text, no text in two): "
            f"{report['split_sizes']}.",
            "",
            "| target | measured | met |",
            "|---|---|---|",
            *[f"| {name} | {value} | {'yes' if ok else '**no**'} |" for name, value, ok in checks],
            "",
            f"Per format, whole test split ({report['split_sizes']['test']:,} texts), batch-1 latency of the model "
            "alone on this CPU:",
            "",
            format_table(report),
            "",
            "Baselines in the same run, same splits, test accuracy: NBSVM-bi (binary word uni+bigrams with "
            f"naive-Bayes log-count ratios, logistic regression, C={report['baselines']['nbsvm_bigrams_C']:g} chosen "
            f"on validation) {baselines['nbsvm_bigrams']:.4f}; bag of WordPieces (embedding, masked mean, softmax; "
            f"fastText-style, same tokens) {baselines['bag_of_wordpieces']:.4f}. Published on the same Pang & Lee "
            "snippets: NBSVM-bi 79.4, MNB 79.0 (Wang & Manning 2012), CNN-rand 76.1 (Kim 2014).",
            "End-to-end predict, one sentence, median / p90 ms (tokenise with the run's vocabulary + LiteRT invoke): "
            + ", ".join(f"{k} {v[0]:.2f} / {v[1]:.2f}" for k, v in predict.items())
            + ".",
        ]
    )
    update_section("sentiment", body)
    print(body)


if __name__ == "__main__":
    main(sys.argv[1:])
