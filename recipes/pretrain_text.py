"""Text pretraining: a causal language model on all the unlabelled text that ships offline.

    toolkit pretrain text                              # writes the preset saved_models/pretrain_text/
    toolkit run sentiment --backbone-preset saved_models/pretrain_text
    toolkit run generation --backbone-preset saved_models/pretrain_text

The text (`toolkit.data.corpus.pretraining_corpus`): the sentiment recipe's training snippets and
the 1,097 plot summaries of the Rotten Tomatoes file, and the training paragraphs of Python's
pydoc topics and of Hamlet; no text that a recipe scores. One WordPiece vocabulary is learned on
it; the causal GRU backbone learns to predict the next WordPiece (ULMFiT's first stage). The
folder is a text backbone preset (config.json, model.weights.h5, metadata.json, assets/vocab.txt)
that sentiment fine-tunes from under its classifier, and generation under its softmax.
"""

import math

import keras
import numpy as np

from toolkit import recipe, training
from toolkit.data import corpus, tokenizer
from toolkit.tasks import language_model

# 5 passes: issue 18 bounds pretraining by 15 min of CPU (10 passes took 1,294 s, 6 took 924 s on an
# Ice Lake Xeon). The one-cycle schedule spans the epochs given; benchmarks/transfer.py measures what
# the preset buys sentiment (RESULTS `transfer`).
DEFAULTS = dict(data="pretraining", backbone="causal_rnn", epochs=5, batch_size=128, learning_rate=5e-3, patience=2)
# Generation's causal GRU without its tied output (tying was chosen for generation alone; not measured
# for transfer); --backbone-option overrides.
BACKBONE_DEFAULTS = {"width": 256, "dropout": 0.2}


def parse_args(argv=None):
    p = recipe.parser("pretrain_text", __doc__.splitlines()[0], prog="toolkit pretrain text", **DEFAULTS)
    p.set_defaults(name="pretrain_text")
    p.add_argument("--sequence-length", type=recipe.positive_int, default=64, help="tokens per training window")
    p.add_argument("--stride", type=recipe.positive_int, default=32, help="training windows start this far apart")
    p.add_argument("--vocabulary-size", type=recipe.positive_int, default=8000, help="at most this many WordPieces")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    training.distribute(args.distribute)  # before any model or TensorFlow op
    keras.utils.set_random_seed(args.seed)
    options = recipe.backbone_config(args)
    if args.backbone == "causal_rnn" and not args.backbone_preset:
        options = {**BACKBONE_DEFAULTS, **options}

    # Data: the training text of every source; the vocabulary from it (decoders' [START]/[END] included).
    text = corpus.load(args.data)
    reserved = tokenizer.RESERVED_TOKENS + tokenizer.SEQUENCE_TOKENS
    vocabulary = recipe.preset_vocabulary(args) or tokenizer.train_vocabulary(
        text.train, args.vocabulary_size, reserved_tokens=reserved
    )
    tokenize = tokenizer.make(vocabulary, None)
    streams = {k: corpus.token_stream(tokenize, getattr(text, k)) for k in ("train", "validation")}
    train_windows = corpus.windows(streams["train"], args.sequence_length, args.stride)
    validation_windows = corpus.windows(streams["validation"], args.sequence_length)
    train = corpus.batches(train_windows, args.batch_size, shuffle=True, seed=args.seed)
    validation = corpus.batches(validation_windows, args.batch_size)

    model = language_model.build(args.backbone, args.sequence_length, len(vocabulary), **options)
    decoder = model.get_layer("decoder")
    recipe.start_from_preset(decoder, args)
    steps = args.epochs * math.ceil(len(train_windows) / args.batch_size)
    trainer = language_model.compile(model, args.learning_rate, steps)  # what fit trains: the same weights

    def describe(history):
        return {
            "data": f"{args.data}: " + ("Rotten Tomatoes training snippets + plot summaries, pydoc and Hamlet "
                                        "training paragraphs; no scored text" if args.data == "pretraining" else
                                        "its training split"),
            "objective": "next-WordPiece prediction (causal language model), teacher-forced windows",
            "tokens": {k: int(v.size) for k, v in streams.items()},
            "vocabulary_size": len(vocabulary),
            "validation": {"perplexity": float(np.exp(recipe.best_epoch_figures(history)["val_loss"]))},
        }  # fmt: skip

    preset, _ = recipe.pretrain("text", args, argv, trainer, decoder, train, validation, describe, vocabulary)
    print(f"validation perplexity {preset.metadata['validation']['perplexity']:.2f} (teacher-forced windows)")
    return preset


if __name__ == "__main__":
    main()
