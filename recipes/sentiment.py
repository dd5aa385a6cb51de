"""Sentiment: Rotten Tomatoes critic snippets on a shared text backbone, from model.fit to LiteRT.

    python recipes/sentiment.py                       # the embedded default
    toolkit run sentiment --data csv:reviews.csv --text-column review --label-column stars

Texts -> WordPiece vocabulary learned on the training split -> token ids in tf.data ->
bidirectional GRU backbone -> softmax head -> model.fit -> .keras, SavedModel, LiteRT fp32,
dynamic-range and int8 (builtin ops only), each scored on the whole test split, written to
saved_models/sentiment/ with report.json and the vocabulary.
"""

import math

import keras

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
    p.add_argument("--head-dropout", type=float, default=0.5)
    p.add_argument("--calibration-samples", type=recipe.positive_int, default=300)
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    training.distribute(args.distribute)  # before any model or TensorFlow op
    keras.utils.set_random_seed(args.seed)
    options = recipe.backbone_options(args.backbone_option, args.backbone)
    backbones.require_kind(args.backbone, "text")

    # Data: texts and labels per split; the vocabulary is learned from the training split only.
    class_names = args.class_names.split(",") if args.class_names else None
    data = text.load(args.data, args.data_dir, args.text_column, args.label_column, class_names)
    vocabulary = tokenizer.train_vocabulary(data.train[0], args.vocabulary_size)
    tokenize = tokenizer.make(vocabulary, args.sequence_length)
    train = tokenizer.batches(tokenize, *data.train, args.batch_size, shuffle=True, seed=args.seed)
    validation = tokenizer.batches(tokenize, *data.validation, args.batch_size)

    # Model: a shared text backbone with a classification head.
    model = text_classification.build(
        args.backbone, args.sequence_length, len(data.class_names), len(vocabulary), args.head_dropout, **options
    )
    backbone = tasks.backbone_of(model)
    if args.backbone_weights:
        training.load_backbone_weights(backbone, args.backbone_weights)
    text_classification.compile(
        model, args.learning_rate, args.epochs * math.ceil(data.sizes["train"] / args.batch_size)
    )

    with recipe.TrainingRun("text_classification", args, argv, options) as run:
        run.fit(model, train, validation)
        tokenizer.save_vocabulary(vocabulary, run.path)

        # Export and verify every format on the whole test split (calibration from the training split).
        test_tokens, test_labels = tokenizer.encode(tokenize, data.test[0]), data.test[1]
        calibration = tokenizer.encode(tokenize, data.train[0][: args.calibration_samples])
        formats, outputs = run.export(model, test_tokens, test_labels, calibration)

        matrix = text_classification.confusion_matrix(outputs, test_labels, len(data.class_names))
        report.plot_confusion(matrix, data.class_names, run.file("confusion_matrix.png"))
        run.conclude(
            model,
            class_names=data.class_names,
            head="dropout + softmax dense on the backbone's pooled vector",
            dataset=data.source,
            split_sizes=data.sizes,
            sequence_length=args.sequence_length,
            vocabulary_size=len(vocabulary),
            figures=["confusion_matrix.png"],
        )
    return run.result

if __name__ == "__main__":
    main()
