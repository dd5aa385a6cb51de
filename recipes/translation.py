"""Translation: English -> French numbers and dates, an attention encoder-decoder on the shared text backbones.

    python recipes/translation.py                     # the embedded num2words/babel corpus
    python recipes/translation.py --data gettext_fr   # 32k real UI messages (Debian's catalogues): a Transformer
    toolkit run translation --data tsv:fra.txt --source-length 32 --target-length 32
    toolkit run translation --backbone-preset saved_models/pretrain_text   # the encoder starts from a text preset

Pairs -> WordPiece vocabularies learned on the training split (source and target) -> token ids in
tf.data -> bidirectional GRU encoder + causal GRU decoder with Luong attention (on gettext catalogues:
Transformer encoder and decoder, 2+2 blocks, d=256) -> teacher-forced model.fit -> the encoder and
one decoder step (the Transformer's with its key/value cache) exported as LiteRT files (builtin ops only) -> greedy
decoding of the whole test split on Keras and on LiteRT (must give the same tokens), scored with
sacrebleu BLEU and chrF and exact match, with beam search beside it; saved_models/translation/.
"""

import math

import keras
import numpy as np

from toolkit import recipe, training
from toolkit.data import tokenizer
from toolkit.data import translation as pairs
from toolkit.runs import TARGET_VOCABULARY_FILE
from toolkit.tasks import decoding, translation

DEFAULTS = dict(data="numbers_fr", backbone="birnn", epochs=20, batch_size=128, learning_rate=5e-3, patience=4)
# On gettext catalogues (real UI messages) the Transformer decoder is the default: there it beat the attention
# GRU, which stays the default for numbers and dates (benchmarks/RESULTS.md, translation_gettext).
CATALOGUE_DEFAULTS = dict(backbone="transformer", decoder="transformer", learning_rate=1e-3, epochs=3,
                          source_length=32, target_length=40, vocabulary_size=4000)  # fmt: skip
TRANSFORMER_OPTIONS = ["embedding_dim=256", "intermediate_dim=1024", "num_heads=8", "depth=2", "dropout=0.1"]


HEADS = {
    "causal_rnn": "Luong attention over the encoder memory, tanh(W[h; c]), softmax over target WordPieces",
    translation.TRANSFORMER: "Transformer decoder (causal self-attention, cross-attention to the encoder memory), "
    "softmax over target WordPieces",
}


def parse_args(argv=None):
    p = recipe.parser("translation", __doc__.splitlines()[0], **DEFAULTS)
    p.add_argument("--decoder", default="causal_rnn",
                   help="causal_rnn (a GRU under Luong attention) or transformer (a Transformer decoder)")
    p.add_argument("--decoder-option", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--source-length", type=recipe.positive_int, default=18, help="source tokens (longer: cut)")
    p.add_argument("--target-length", type=recipe.positive_int, default=22, help="decoder steps, [END] included")
    p.add_argument("--vocabulary-size", type=recipe.positive_int, default=1000, help="WordPieces per language")
    p.add_argument("--beam-size", type=recipe.positive_int, default=4, help="beam search width (reported beside)")
    if p.parse_known_args(argv)[0].data.startswith("gettext"):  # a flag given still wins over these
        p.backbone_default = CATALOGUE_DEFAULTS["backbone"]
        p.set_defaults(**{k: v for k, v in CATALOGUE_DEFAULTS.items() if k != "backbone"})
        args = p.parse_args(argv)
        if args.backbone == "transformer" and not args.backbone_option and not args.backbone_preset:
            args.backbone_option = list(TRANSFORMER_OPTIONS)  # the decoder's own defaults are these
        return args
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    training.distribute(args.distribute)  # before any model or TensorFlow op
    keras.utils.set_random_seed(args.seed)
    encoder_options = recipe.backbone_config(args)
    decoder_options = recipe.backbone_options(args.decoder_option, args.decoder)

    # Data: sentence pairs; vocabularies learned from the training split only.
    data = pairs.load(args.data, args.data_dir, args.seed)
    # With --backbone-preset (a `toolkit pretrain text` preset) the encoder starts from it, and the source
    # side is tokenised with the preset's vocabulary (its embedding rows' WordPieces).
    source_vocabulary, target_vocabulary = pairs.vocabularies(data, args.vocabulary_size, args.vocabulary_size)
    source_vocabulary = recipe.preset_vocabulary(args) or source_vocabulary
    tokenizers = pairs.tokenizers(source_vocabulary, target_vocabulary, args.source_length)
    train = pairs.batches(tokenizers, *data.train, args.target_length, args.batch_size, shuffle=True, seed=args.seed)
    validation = pairs.batches(tokenizers, *data.validation, args.target_length, args.batch_size)

    model = translation.build(args.source_length, args.target_length, len(source_vocabulary), len(target_vocabulary),
                              args.backbone, args.decoder, encoder_options, decoder_options)  # fmt: skip
    recipe.start_from_preset(model.get_layer("encoder"), args)
    translation.compile(model, args.learning_rate, args.epochs * math.ceil(data.sizes["train"] / args.batch_size))

    with recipe.TrainingRun("translation", args, argv, encoder_options) as run:
        run.fit(model, train, validation, keep_backbone=False)  # two backbones: encoder and decoder
        tokenizer.save_vocabulary(source_vocabulary, run.path)
        tokenizer.save_vocabulary(target_vocabulary, run.path, TARGET_VOCABULARY_FILE)

        # Greedy decoding of the whole test split on Keras, then on every LiteRT format.
        test = {
            "source_tokens": tokenizer.encode(tokenizers[0], data.test[0]),
            "references": data.test[1],
            "vocabulary": target_vocabulary,
            "max_length": args.target_length,
        }
        # Training pairs the integer parts are calibrated on in `toolkit benchmark`.
        some = np.linspace(0, len(data.train[0]) - 1, 64).astype(int)
        calibration = {**test, "source_tokens": tokenizer.encode(tokenizers[0], [data.train[0][i] for i in some]),
                       "references": [data.train[1][i] for i in some]}  # fmt: skip
        formats, _, decoded = run.export_decoder(model, test, calibration)

        # Beam search (KerasHub BeamSampler) on the same Keras parts, for comparison.
        engines = {k: decoding.keras_engine(m) for k, m in translation.parts(model).items()}
        beam = translation.translate(engines, test["source_tokens"], args.target_length,
                                     sampler=decoding.make_sampler("beam", num_beams=args.beam_size))  # fmt: skip
        beam_metrics = translation.score(beam, data.test[1], target_vocabulary)
        hypotheses = translation.texts(decoded, target_vocabulary)
        samples = [{"source": s, "reference": r, "greedy": h}
                   for s, r, h in list(zip(data.test[0], data.test[1], hypotheses))[:12]]  # fmt: skip
        run.conclude(
            model, head=HEADS.get(args.decoder, HEADS["causal_rnn"]),
            decoder=args.decoder, decoder_options=decoder_options, dataset=data.source,
            languages=list(data.languages), split_sizes=data.sizes, source_length=args.source_length,
            target_length=args.target_length, vocabulary_sizes=[len(source_vocabulary), len(target_vocabulary)],
            patience=args.patience, learning_rate=args.learning_rate,
            beam_search={"beam_size": args.beam_size, **beam_metrics}, samples=samples,
        )  # fmt: skip
        run.notes.append(f"beam search ({args.beam_size}): " + ", ".join(f"{k} {v:.4f}" for k, v in beam_metrics.items()))
    return run.result

if __name__ == "__main__":
    main()
