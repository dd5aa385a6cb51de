"""Sentiment benchmark: the default recipe against the issue's targets, on this machine.

    python benchmarks/sentiment.py [extra recipe flags]

1. Runs the default recipe (Rotten Tomatoes, bidirectional GRU) and reads its report.json:
   test accuracy and F1 per format, training time, LiteRT parity.
2. Baseline in the same run: a bag-of-WordPieces classifier (embedding, masked mean, softmax:
   fastText-style) on the same tokens, vocabulary, splits and training budget.
3. End-to-end `predict` of one sentence on the LiteRT file: tokenise + invoke, median over
   repeated calls (what `toolkit predict sentiment` does per text, minus start-up).
Writes its section of benchmarks/RESULTS.md.
"""

import math
import os
import platform
import shlex
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402

from benchmarks.results import update_section  # noqa: E402
from recipes import sentiment as recipe  # noqa: E402
from toolkit.data import text, tokenizer  # noqa: E402
from toolkit.export.litert import median_latency_ms  # noqa: E402
from toolkit.export.report import format_table  # noqa: E402
from toolkit.predict import SentimentPredictor  # noqa: E402
from toolkit.tasks import text_classification  # noqa: E402


def bag_of_wordpieces(args, data):
    """Test accuracy of the fastText-style baseline, same tokens and budget as the recipe."""
    vocabulary = tokenizer.train_vocabulary(data.train[0], args.vocabulary_size)
    tokenize = tokenizer.make(vocabulary, args.sequence_length)
    keras.utils.set_random_seed(args.seed)
    tokens = keras.Input((args.sequence_length,), dtype="int32")
    x = keras.layers.Embedding(len(vocabulary), 64, mask_zero=True)(tokens)
    x = keras.layers.GlobalAveragePooling1D()(keras.layers.Dropout(args.head_dropout)(x))
    model = keras.Model(tokens, keras.layers.Dense(len(data.class_names), activation="softmax")(x))
    steps = args.epochs * math.ceil(data.sizes["train"] / args.batch_size)
    text_classification.compile(model, args.learning_rate * 5, steps)  # a linear model takes a larger step
    train = tokenizer.batches(tokenize, *data.train, args.batch_size, shuffle=True, seed=args.seed)
    validation = tokenizer.batches(tokenize, *data.validation, args.batch_size)
    stop = keras.callbacks.EarlyStopping(patience=args.patience, restore_best_weights=True)
    model.fit(train, validation_data=validation, epochs=args.epochs * 2, callbacks=[stop], verbose=0)
    probabilities = model.predict(tokenizer.encode(tokenize, data.test[0]), verbose=0)
    return text_classification.score(probabilities, data.test[1])["accuracy"]


def main(argv):
    command = shlex.join(["python", "benchmarks/sentiment.py", *argv])
    report = recipe.main(argv)
    args = recipe.parse_args(argv)
    data = text.load(args.data, args.data_dir, args.text_column, args.label_column)
    baseline = bag_of_wordpieces(args, data)

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
        ("test accuracy (Keras) >= 0.77", f"{acc:.4f} (baseline {baseline:.4f})", acc >= 0.77),
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
            f"Baseline in the same run: bag of WordPieces (embedding, masked mean, softmax; fastText-style) on the "
            f"same tokens and splits: test accuracy {baseline:.4f}.",
            "End-to-end predict, one sentence, median / p90 ms (tokenise with the run's vocabulary + LiteRT invoke): "
            + ", ".join(f"{k} {v[0]:.2f} / {v[1]:.2f}" for k, v in predict.items())
            + ".",
        ]
    )
    update_section("sentiment", body)
    print(body)


if __name__ == "__main__":
    main(sys.argv[1:])
