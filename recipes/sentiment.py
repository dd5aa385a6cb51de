"""Sentiment: Rotten Tomatoes critic snippets on a shared text backbone, from model.fit to LiteRT.

    python recipes/sentiment.py                       # the embedded default
    toolkit run sentiment --data csv:reviews.csv --text-column review --label-column stars

Texts -> WordPiece vocabulary learned on the training split -> token ids in tf.data ->
bidirectional GRU backbone beside a linear model on the same ids' unigrams and hashed bigrams
(started from naive Bayes, as NBSVM) -> one softmax -> model.fit -> .keras, SavedModel, LiteRT fp32,
dynamic-range and int8 (builtin ops only), each scored on the whole test split, written to
saved_models/sentiment/ with report.json and the vocabulary. Two baselines train in the same run
on the same splits (report.json `baselines`): NBSVM-bi and a bag of WordPieces.
"""

import math

import keras
import numpy as np

from toolkit import backbones, recipe, tasks, training
from toolkit.data import text, tokenizer
from toolkit.export import report
from toolkit.tasks import text_classification

DEFAULTS = dict(data="rotten_tomatoes", backbone="birnn", epochs=4, batch_size=64, learning_rate=2e-3)


def parse_args(argv=None):
    p = recipe.parser("sentiment", __doc__.splitlines()[0], **DEFAULTS)
    p.add_argument(
        "--sequence-length", type=recipe.positive_int, default=48, help="tokens per text (longer: truncated)"
    )
    p.add_argument("--vocabulary-size", type=recipe.positive_int, default=8000, help="at most this many WordPieces")
    p.add_argument("--text-column", default="text", help="for csv/tsv/jsonl data")
    p.add_argument("--label-column", default="label", help="for csv/tsv/jsonl data")
    p.add_argument("--class-names", default=None, help="comma-separated label values, in order (default: sorted)")
    p.add_argument("--head-dropout", type=recipe.fraction, default=0.5)
    # Chosen on validation (issue 18): backbone alone 0.786, 65,536 buckets 0.787, 262,144 buckets 0.794.
    p.add_argument("--ngram-buckets", type=int, default=262144,
                   help="hashed-bigram buckets of a naive-Bayes-started n-gram model beside the backbone (0: off)")
    p.add_argument("--calibration-samples", type=recipe.positive_int, default=300)
    return p.parse_args(argv)


def nbsvm_bigrams(data, costs=(0.1, 0.3, 1.0, 3.0, 10.0)):
    """Wang & Manning's (2012) NBSVM-bi in its logistic-regression form: binary word unigrams and
    bigrams scaled by their naive-Bayes log-count ratio, one-vs-rest for more than two classes, the
    cost C chosen on validation. scikit-learn does the work; the 10 lines of NB weighting are ours
    because scikit-learn has no NB-weighted linear model. Returns (test accuracy, chosen C)."""
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression

    vectorizer = CountVectorizer(ngram_range=(1, 2), binary=True)
    train = vectorizer.fit_transform(data.train[0])
    splits = {"validation": vectorizer.transform(data.validation[0]), "test": vectorizer.transform(data.test[0])}
    labels = data.train[1]
    classes = [1] if len(data.class_names) == 2 else range(len(data.class_names))

    def predictions(c):
        scores = {k: [] for k in splits}
        for k in classes:
            positive = labels == k
            p, q = 1 + train[positive].sum(0), 1 + train[~positive].sum(0)  # add-one smoothed feature counts
            ratio = np.asarray(np.log(p / p.sum()) - np.log(q / q.sum())).ravel()
            model = LogisticRegression(C=c, max_iter=2000).fit(train.multiply(ratio).tocsr(), positive)
            for split, x in splits.items():
                scores[split].append(model.decision_function(x.multiply(ratio).tocsr()))
        if len(classes) == 1:
            return {split: (s[0] > 0).astype(np.int64) for split, s in scores.items()}
        return {split: np.argmax(s, axis=0) for split, s in scores.items()}

    found = {c: predictions(c) for c in costs}
    best = max(costs, key=lambda c: np.mean(found[c]["validation"] == data.validation[1]))
    return float(np.mean(found[best]["test"] == data.test[1])), best


def bag_of_wordpieces(args, data, vocabulary, tokenize):
    """fastText-style baseline (embedding, masked mean, dropout, softmax) on the recipe's own tokens,
    splits and step budget, early-stopped on validation. Returns its test accuracy."""
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


def main(argv=None):
    args = parse_args(argv)
    training.distribute(args.distribute)  # before any model or TensorFlow op
    keras.utils.set_random_seed(args.seed)
    options = recipe.backbone_config(args)
    backbones.require_kind(args.backbone, "text")

    # Data: texts and labels per split; the vocabulary is learned from the training split only (or is
    # the backbone preset's, whose embedding rows stand for its WordPieces).
    class_names = args.class_names.split(",") if args.class_names else None
    data = text.load(args.data, args.data_dir, args.text_column, args.label_column, class_names)
    vocabulary = recipe.preset_vocabulary(args) or tokenizer.train_vocabulary(data.train[0], args.vocabulary_size)
    tokenize = tokenizer.make(vocabulary, args.sequence_length)
    train = tokenizer.batches(tokenize, *data.train, args.batch_size, shuffle=True, seed=args.seed)
    validation = tokenizer.batches(tokenize, *data.validation, args.batch_size)

    # Model: a shared text backbone with a classification head.
    model = text_classification.build(
        args.backbone, args.sequence_length, len(data.class_names), len(vocabulary), args.head_dropout,
        args.ngram_buckets, **options,
    )
    train_tokens = tokenizer.encode(tokenize, data.train[0])  # naive Bayes' start and int8 calibration
    if args.ngram_buckets:  # the n-gram model starts as naive Bayes on the training texts
        model.get_layer("classification_ngrams").set_naive_bayes(train_tokens, data.train[1])
    backbone = tasks.backbone_of(model)
    recipe.start_from_preset(backbone, args)
    text_classification.compile(
        model, args.learning_rate, args.epochs * math.ceil(data.sizes["train"] / args.batch_size)
    )

    with recipe.TrainingRun("text_classification", args, argv, options) as run:
        run.fit(model, train, validation)
        tokenizer.save_vocabulary(vocabulary, run.path)

        # Export and verify every format on the whole test split (calibration from the training split).
        test_tokens, test_labels = tokenizer.encode(tokenize, data.test[0]), data.test[1]
        calibration = train_tokens[: args.calibration_samples]
        formats, outputs = run.export(model, test_tokens, test_labels, calibration,
                                      class_names=data.class_names)

        nbsvm, cost = nbsvm_bigrams(data)
        reference = {"nbsvm_bigrams": nbsvm, "nbsvm_bigrams_C": cost,
                     "bag_of_wordpieces": bag_of_wordpieces(args, data, vocabulary, tokenize)}  # fmt: skip
        matrix = text_classification.confusion_matrix(outputs, test_labels, len(data.class_names))
        report.plot_confusion(matrix, data.class_names, run.file("confusion_matrix.png"))
        run.conclude(
            model,
            baselines=reference,
            head="dropout + dense on the backbone's pooled vector"
            + (f" + naive-Bayes-started n-gram logits ({args.ngram_buckets} buckets)" if args.ngram_buckets else "")
            + ", softmax",
            dataset=data.source,
            split_sizes=data.sizes,
            sequence_length=args.sequence_length,
            vocabulary_size=len(vocabulary),
            figures=["confusion_matrix.png"],
        )
        run.notes.append("baselines (test accuracy): " + ", ".join(f"{k} {v:g}" for k, v in reference.items()))
    return run.result

if __name__ == "__main__":
    main()
