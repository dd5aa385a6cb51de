"""`toolkit pretrain vision`: the dense targets, the scene stream, and a tiny run whose preset fits
the detection and segmentation models."""

import json

import numpy as np
import pytest

from tests.conftest import SEED, cli_fails, margin, run_cli
from toolkit.data import scenes
from toolkit.tasks import pretraining


def test_targets_are_the_share_of_each_class_per_cell():
    mask = np.zeros((1, 32, 32, 1), np.uint8)
    mask[0, :8, :4] = 3  # half of the top-left 8x8 cell (P3) is class 3 - 1 = garment 2
    shares = {k: np.asarray(v) for k, v in pretraining.targets(mask, 11).items()}
    assert {k: v.shape for k, v in shares.items()} == {"P2": (1, 8, 8, 11), "P3": (1, 4, 4, 11),
                                                       "P4": (1, 2, 2, 11), "P5": (1, 1, 1, 11)}  # fmt: skip
    for level in shares.values():
        np.testing.assert_allclose(level.sum(-1), 1.0, atol=1e-6)
    np.testing.assert_allclose(shares["P3"][0, 0, 0, [0, 3]], [0.5, 0.5])
    np.testing.assert_allclose(shares["P2"][0, 0, 0, 3], 1.0)
    np.testing.assert_allclose(shares["P5"][0, 0, 0, 3], 32 / 1024)


def _items():
    rng = np.random.default_rng(0)
    items = np.zeros((40, 28, 28), np.uint8)
    items[:, 6:22, 6:22] = rng.integers(60, 255, (40, 16, 16))
    return items, np.arange(40) % 10


def test_fresh_scenes_change_every_pass_and_replay_from_the_seed():
    items, labels = _items()

    def passes(dataset, n=2):
        return [np.stack([image for image, _ in dataset.as_numpy_iterator()]) for _ in range(n)]

    first, second = passes(scenes.pretraining_scenes(items, labels, 4, seed=5, canvas=64))
    again = passes(scenes.pretraining_scenes(items, labels, 4, seed=5, canvas=64))
    assert first.shape == (4, 64, 64, 1) and not np.array_equal(first, second)
    np.testing.assert_array_equal(first, again[0])  # a resumed run replays the passes it had done
    np.testing.assert_array_equal(second, again[1])
    fixed = passes(scenes.pretraining_scenes(items, labels, 4, seed=5, canvas=64, fresh=False))
    np.testing.assert_array_equal(fixed[0], fixed[1])
    _, mask = next(scenes.pretraining_scenes(items, labels, 1, seed=5, canvas=64).as_numpy_iterator())
    assert mask.max() >= 1 and set(np.unique(mask)) <= set(range(11))


@pytest.mark.slow
@pytest.mark.learned
def test_a_tiny_pretraining_learns_and_its_preset_fits_the_pyramid_tasks(fashion_small, tmp_path):
    from toolkit import tasks
    from toolkit.backbones import presets
    from toolkit.tasks import detection, segmentation

    # widths of 16, not 8: an 8-channel resnet at 128 px aborted inside oneDNN's training kernels on
    # AMD EPYC (double free; fine with TF_ENABLE_ONEDNN_OPTS=0), seen with TF 2.21
    done = run_cli(
        "pretrain", "vision", "--data", str(fashion_small), "--output", str(tmp_path), "--canvas", "64",
        "--scenes-per-epoch", "256", "--validation-scenes", "64", "--epochs", "6", "--verbose", "0",
        "--learning-rate", "1e-2", "--backbone-option", "widths=(16,16,32,32)", "--backbone-option", "stem_width=16",
        "--seed", str(SEED),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    folder = tmp_path / "pretrain_vision"
    meta = json.loads((folder / "metadata.json").read_text())
    assert meta["trained_by"] == "pretrain_vision" and meta["scenes_seen"] == 6 * 256
    assert "test file is not read" in meta["data"] and meta["command"].startswith("toolkit pretrain vision")
    # over the best constant guess (the validation scenes' own class shares on every cell: 6.8-7.3 over
    # the four probes, by seed); a model that learnt nothing scores 1
    constant = _constant_guess_loss(fashion_small, SEED + 1)
    margin("validation loss / constant guess's", min(meta["history"]["val_loss"]) / constant, 0.95, trivial=1.0,
           higher=False)  # fmt: skip
    preset = presets.read(folder)
    assert preset.input_shape == (64, 64, 1) and preset.options["widths"] == (16, 16, 32, 32)
    for model in (detection.build(preset.backbone, (96, 96, 1), 10, 16, 16, 1, **preset.options),
                  segmentation.build(preset.backbone, (96, 96, 1), 11, 16, 16, **preset.options)):  # fmt: skip
        backbone = presets.load_weights(tasks.backbone_of(model), preset)
        for a, b in zip(backbone.get_weights(), presets.load_weights(_fresh(preset), preset).get_weights()):
            np.testing.assert_array_equal(a, b)


def _fresh(preset):
    from toolkit import backbones

    return backbones.get(preset.backbone, preset.input_shape, **preset.options)


def _constant_guess_loss(folder, seed):
    """Cross-entropy, summed over the probes, of predicting the validation scenes' mean class shares everywhere."""
    from toolkit.data import fashion_mnist

    items, labels = fashion_mnist.read_split(str(folder), "train")
    cut = int(len(items) * scenes.TRAIN_FRACTION)
    dataset = scenes.pretraining_scenes(items[cut:], labels[cut:], 64, seed=seed, canvas=64, fresh=False)
    masks = np.stack([mask for _, mask in dataset.as_numpy_iterator()])
    total = 0.0
    for shares in pretraining.targets(masks, 11).values():
        shares = np.asarray(shares)
        prior = shares.reshape(-1, 11).mean(0)
        total += float(-(shares * np.log(np.clip(prior, 1e-7, 1))).sum(-1).mean())
    return total


def test_pretrain_needs_a_known_kind():
    done = cli_fails("pretrain", "audio")
    assert done.returncode == 2 and "unknown pretraining 'audio'" in done.stderr and "vision" in done.stderr


def _paragraphs(path, count=120):
    """Short paragraphs of a tiny language with regular structure: a causal model can learn it."""
    import random

    rng = random.Random(0)
    subjects, verbs, objects = ["the cat", "a dog", "my film", "the plot"], ["sees", "likes", "ends", "moves"], \
        ["the park", "a ball", "its hero", "the night"]  # fmt: skip
    paragraphs = [" ".join(f"{rng.choice(subjects)} {rng.choice(verbs)} {rng.choice(objects)} ." for _ in range(4))
                  for _ in range(count)]  # fmt: skip
    path.write_text("\n\n".join(paragraphs) + "\n")


@pytest.mark.slow
@pytest.mark.learned
def test_a_tiny_text_pretraining_gives_a_preset_that_sentiment_starts_from(tmp_path):
    from recipes import sentiment
    from tests.test_sentiment import _corpus
    from toolkit.backbones import presets

    _paragraphs(tmp_path / "text.txt")
    done = run_cli(
        "pretrain", "text", "--data", f"txt:{tmp_path / 'text.txt'}", "--output", str(tmp_path), "--epochs", "3",
        "--sequence-length", "16", "--stride", "8", "--vocabulary-size", "120", "--batch-size", "16",
        "--backbone-option", "width=16", "--backbone-option", "embedding_dim=16", "--verbose", "0",
        "--seed", str(SEED),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    preset = presets.read(tmp_path / "pretrain_text")
    assert preset.backbone == "causal_rnn" and preset.kind == "text" and preset.vocabulary
    meta = preset.metadata
    assert meta["command"].startswith("toolkit pretrain text") and meta["vocabulary_size"] == preset.options[
        "vocabulary_size"]  # fmt: skip
    # 12 equally likely words per slot: a model that learnt the grammar is far below the vocabulary's size
    margin("validation perplexity", meta["validation"]["perplexity"], 30, trivial=meta["vocabulary_size"],
           higher=False)  # fmt: skip
    _corpus(tmp_path / "reviews.jsonl")
    result = sentiment.main([
        "--data", f"jsonl:{tmp_path / 'reviews.jsonl'}", "--text-column", "review", "--label-column", "verdict",
        "--sequence-length", "12", "--epochs", "1", "--batch-size", "16", "--ngram-buckets", "0",
        "--backbone-preset", str(tmp_path / "pretrain_text"), "--output", str(tmp_path), "--verbose", "0",
        "--calibration-samples", "16",
    ])  # fmt: skip
    assert result["backbone"] == "causal_rnn" and result["backbone_preset"] == str(tmp_path / "pretrain_text")
    assert (tmp_path / "sentiment" / "vocab.txt").read_text() == open(preset.vocabulary).read()
    assert result["formats"]["tflite_fp32"]["max_abs_diff"] < 1e-4  # the causal classifier exports builtin-only
