"""The sentiment recipe end to end on a small generated corpus: it learns, every export verifies,
and `toolkit predict sentiment` reads raw text (and refuses bad text with one clear line)."""

import itertools
import json
import os
import random

import pytest

from tests.conftest import SEED, cli_fails, cli_in_process, margin
from tests.test_cli import _fails_with

POSITIVE = ["wonderful", "moving", "brilliant", "charming", "gripping", "superb", "delightful", "clever"]
NEGATIVE = ["dull", "tedious", "clumsy", "lifeless", "awful", "boring", "shallow", "messy"]
SUBJECTS = ["the film", "this movie", "the plot", "the cast", "the script", "its ending", "the score", "the pacing"]
FILLERS = ["", "honestly ", "frankly ", "overall "]


def _corpus(path):
    """Reviews whose label follows the polarity of their adjective, in varied phrasings."""
    rng = random.Random(0)
    rows = []
    for subject, filler, (label, words) in itertools.product(
        SUBJECTS, FILLERS, [("fresh", POSITIVE), ("rotten", NEGATIVE)]
    ):
        for word in rng.sample(words, 5):
            rows.append({"review": f"{filler}{subject} is {word} .", "verdict": label})
    rng.shuffle(rows)
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return len(rows)


@pytest.fixture(scope="module")
def sentiment_run(tmp_path_factory):
    from recipes import sentiment

    folder = tmp_path_factory.mktemp("sentiment")
    _corpus(folder / "reviews.jsonl")
    argv = [
        "--data", f"jsonl:{folder / 'reviews.jsonl'}", "--text-column", "review", "--label-column", "verdict",
        "--sequence-length", "12", "--vocabulary-size", "200", "--epochs", "8", "--batch-size", "16",
        "--learning-rate", "1e-2", "--backbone-option", "width=16", "--backbone-option", "embedding_dim=16",
        "--output", str(folder / "out"), "--verbose", "0", "--calibration-samples", "100", "--seed", str(SEED),
    ]  # fmt: skip
    return sentiment.main(argv), str(folder / "out" / "sentiment")


@pytest.mark.slow
@pytest.mark.learned
def test_recipe_learns_and_every_format_verifies(sentiment_run):
    result, run = sentiment_run
    formats = result["formats"]
    assert result["metric"] == "accuracy" and result["split_sizes"]["test"] > 20
    margin("keras accuracy", formats["keras"]["accuracy"], 0.9, trivial=0.5)  # held-out texts, majority rate 0.5
    margin("keras F1", formats["keras"]["f1"], 0.85, trivial=0.67)  # "always positive" on balanced labels
    assert formats["tflite_fp32"]["max_abs_diff"] <= 1e-4
    baselines = result["baselines"]  # trained in the same run on the same splits (issue 18)
    assert set(baselines) == {"nbsvm_bigrams", "nbsvm_bigrams_C", "bag_of_wordpieces"}
    margin("NBSVM-bi baseline accuracy", baselines["nbsvm_bigrams"], 0.9, trivial=0.5)  # polarity words: linear
    assert 0.0 <= baselines["bag_of_wordpieces"] <= 1.0
    for name in ("tflite_dynamic", "tflite_int8"):
        margin(f"|{name} - keras| accuracy", abs(formats[name]["accuracy"] - formats["keras"]["accuracy"]), 0.05,
               higher=False)  # fmt: skip
    for name in ("model.keras", "model_fp32.tflite", "model_dynamic.tflite", "model_int8.tflite", "vocab.txt",
                 "labels.txt", "report.json", "report.md", "backbone/model.weights.h5",
                 "backbone/assets/vocab.txt"):  # fmt: skip
        assert os.path.isfile(os.path.join(run, name)), name
    with open(os.path.join(run, "report.json")) as f:
        assert json.load(f)["formats"]["tflite_dynamic"]["size_bytes"] < formats["tflite_fp32"]["size_bytes"]


@pytest.mark.slow
def test_predict_reads_raw_text_in_every_format(sentiment_run):
    from toolkit.predict import predict_sentiment

    _, run = sentiment_run
    texts = ["honestly the cast is superb .", "the pacing is tedious ."]
    for fmt in ("keras", "tflite_fp32", "tflite_dynamic"):
        labels = [label for _, label, _ in predict_sentiment(run, texts, fmt)]
        assert labels == ["fresh", "rotten"], (fmt, labels)
    long_text = "the cast is superb . " + "and then some more words " * 2000  # truncated to 12 tokens
    assert predict_sentiment(run, [long_text])[0][1] == "fresh"

    done = cli_in_process("predict", "sentiment", "the film is wonderful .", "--run", run)
    assert done.returncode == 0, done.stderr
    text, label, probability = done.stdout.strip().split("\t")
    assert label == "fresh" and 0.5 < float(probability) <= 1


@pytest.mark.slow
def test_predict_refuses_empty_and_non_utf8_text(sentiment_run):
    _, run = sentiment_run
    _fails_with(cli_fails("predict", "sentiment", "fine", "   ", "--run", run), "text 2: the text is empty")
    _fails_with(cli_fails("predict", "sentiment", b"caf\xe9 latte", "--run", run), "text 1: not valid UTF-8")
    _fails_with(cli_fails("predict", "sentiment", "fine", "--run", run, "--format", "onnx"), "unknown format 'onnx'")


def test_predict_without_a_run_names_the_missing_file(tmp_path):
    _fails_with(cli_fails("predict", "sentiment", "some text", "--run", str(tmp_path)), "labels.txt")


def test_bad_sentiment_options_are_named(tmp_path):
    _fails_with(cli_fails("run", "sentiment", "--backbone", "resnet"), "not a text backbone")
    _fails_with(cli_fails("run", "sentiment", "--data", f"csv:{tmp_path / 'none.csv'}"), "no such file")
    _fails_with(cli_fails("run", "sentiment", "--sequence-length", "0"), "--sequence-length", "positive integer")


@pytest.mark.parametrize("ngram_buckets", [0, 64])
def test_task_contract(tmp_path, ngram_buckets):
    """The shared task contract (tests/contracts.py) on a tiny text classifier over token ids, alone
    and with the linear n-gram model beside the backbone (its LiteRT files builtin-only, scoring
    what Keras scores)."""
    import keras
    import numpy as np

    from tests.contracts import run_task_contract
    from toolkit.tasks import text_classification

    keras.utils.set_random_seed(SEED)
    rng = np.random.default_rng(0)
    tokens = rng.integers(2, 40, (64, 10)).astype(np.int32)
    tokens[:, 7:][rng.random((64, 3)) < 0.5] = 0  # right padding
    labels = (tokens == 7).any(axis=1).astype(np.int64)
    model = text_classification.build("birnn", sequence_length=10, num_classes=2, vocabulary_size=40,
                                      ngram_buckets=ngram_buckets, width=8, embedding_dim=8)  # fmt: skip
    text_classification.compile(model, 1e-2, total_steps=8)
    run_task_contract("text_classification", model, (tokens[:48], labels[:48]), (tokens[48:], labels[48:]),
                      tokens[:16], tmp_path / "run", epochs=2)  # fmt: skip


def test_ngram_logits_average_one_row_per_unigram_and_hashed_bigram():
    """NgramLogits by hand: ids 3, 5 then padding -> rows unigram[3], unigram[5] and the bigram
    bucket (3 * V + 5) mod B over sqrt(3); padding and pairs that touch it add nothing. Its naive-
    Bayes start alone separates texts whose class a word decides."""
    import numpy as np

    from toolkit.heads.classification import NgramLogits

    layer = NgramLogits(vocabulary_size=10, num_classes=2, buckets=7)
    layer.build((None, 4))
    unigrams = np.arange(20, dtype="float32").reshape(10, 2)
    bigrams = 100 + np.arange(14, dtype="float32").reshape(7, 2)
    layer.set_weights([unigrams, bigrams])
    got = np.asarray(layer(np.array([[3, 5, 0, 0], [0, 0, 0, 0]], "int32")))
    expected = (unigrams[3] + unigrams[5] + bigrams[(3 * 10 + 5) % 7]) / np.sqrt(3)
    np.testing.assert_allclose(got[0], expected, rtol=1e-6)
    np.testing.assert_allclose(got[1], [0.0, 0.0])  # an empty text: no n-gram, zero logits

    rng = np.random.default_rng(0)
    tokens = rng.integers(3, 10, (40, 4)).astype("int32")
    tokens[:20, 0], tokens[20:, 0] = 1, 2  # the first word decides the class
    labels = np.repeat([0, 1], 20)
    layer.set_naive_bayes(tokens, labels)
    logits = np.asarray(layer(tokens))
    assert np.all(np.argmax(logits, axis=1) == labels)
    np.testing.assert_allclose(logits.sum(axis=1), 0.0, atol=1e-5)  # rows centred over the classes


@pytest.mark.slow
@pytest.mark.learned
def test_a_text_preset_brings_its_vocabulary(sentiment_run, tmp_path):
    """A sentiment run from another's backbone/ tokenises with the preset's WordPieces (its embedding
    rows mean them), whatever --vocabulary-size says, and starts from the trained features."""
    from recipes import sentiment

    first, run = sentiment_run
    data = os.path.join(os.path.dirname(os.path.dirname(run)), "reviews.jsonl")
    result = sentiment.main([
        "--data", f"jsonl:{data}", "--text-column", "review", "--label-column", "verdict",
        "--sequence-length", "12", "--vocabulary-size", "50", "--epochs", "1", "--batch-size", "16",
        "--backbone-preset", os.path.join(run, "backbone"), "--output", str(tmp_path), "--verbose", "0",
        "--calibration-samples", "16", "--seed", str(SEED),
    ])  # fmt: skip
    with open(os.path.join(run, "vocab.txt")) as a, open(tmp_path / "sentiment" / "vocab.txt") as b:
        assert a.read() == b.read()
    assert result["backbone_options"]["width"] == 16 and result["backbone_preset"] == os.path.join(run, "backbone")
    # one epoch from the trained backbone already separates the polarity words
    margin("accuracy after 1 epoch from the preset", result["formats"]["keras"]["accuracy"], 0.8, trivial=0.5)
