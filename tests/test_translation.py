"""Translation end to end on a small slice of the number corpus: the data is split by value and
detokenises exactly, the attention model learns, greedy decoding on LiteRT gives the Keras tokens,
the step model agrees with the teacher-forced model, and bad input gets one clear line."""

import json
import os

import numpy as np
import pytest

from tests.conftest import SEED, cli_fails, cli_in_process, margin, run_cli
from tests.test_cli import _fails_with


def test_number_corpus_is_split_by_value_and_round_trips_through_the_tokenizer():
    from toolkit.data import tokenizer, translation

    data = translation.numbers_fr()
    assert min(data.sizes.values()) > 1000
    train = set(data.train[0])
    assert not train & set(data.test[0]) and not train & set(data.validation[0])
    assert "neuf mille quatre cent quatre-vingt-dix-sept" in data.train[1] + data.validation[1] + data.test[1]
    data.train = (data.train[0][:4000], data.train[1][:4000])  # a slice keeps the test quick
    source_vocabulary, target_vocabulary = translation.vocabularies(data, 400, 400)
    assert target_vocabulary[:4] == ["[PAD]", "[UNK]", "[START]", "[END]"]
    _, target_tokenizer = translation.tokenizers(source_vocabulary, target_vocabulary, 18)
    references = data.test[1][:300]
    for reference, ids in zip(references, target_tokenizer(references)):
        assert tokenizer.detokenize(target_vocabulary, np.asarray(ids)) == reference


def test_bleu_chrf_and_exact_match_come_from_sacrebleu():
    from toolkit.metrics.translation import score

    references = ["quatre mille six cent vingt et un", "deux mille trois cent quarante-six"]
    perfect = score(references, references)
    assert perfect == {"bleu": pytest.approx(100.0), "chrf": pytest.approx(100.0), "exact_match": 1.0}
    half = score(["quatre mille six cent vingt et un", "deux mille trois cent quarante-cinq"],
                 ["quatre mille six cent vingt et un", "deux mille trois cent quarante-six"])  # fmt: skip
    assert half["exact_match"] == 0.5 and 0 < half["bleu"] < 100 and 0 < half["chrf"] < 100


def test_bad_sentence_pair_files_are_named(tmp_path):
    from toolkit.data.translation import read_pairs
    from toolkit.errors import ToolkitError

    cases = {
        b"one\tun\ntwo deux\n": "line 2: expected source<TAB>target",
        b"one\tun\n \tdeux\n": "line 2 column 1: the text is empty",
        b"one\tun\ncaf\xe9\tcafe\n": "line 2: not valid UTF-8 (byte 0xe9)",
    }
    for i, (content, message) in enumerate(cases.items()):
        path = tmp_path / f"pairs{i}.tsv"
        path.write_bytes(content)
        with pytest.raises(ToolkitError, match=f"{path.name} {message}".replace("(", r"\(").replace(")", r"\)")):
            read_pairs(str(path))


def _catalogue(path, messages):
    """A gettext catalogue (.mo or .po by its suffix) of messages [(id, string, context)], written with babel."""
    from babel.messages.catalog import Catalog
    from babel.messages.mofile import write_mo
    from babel.messages.pofile import write_po

    catalogue = Catalog(locale="fr")
    for message in messages:
        catalogue.add(*message[:2], context=message[2] if len(message) > 2 else None)
    with open(path, "wb") as f:
        (write_po if str(path).endswith(".po") else write_mo)(f, catalogue)


def test_gettext_catalogues_become_split_message_pairs(tmp_path):
    from toolkit.data import translation as pairs

    kept = [(f"Cannot open file number {n}", f"Impossible d'ouvrir le fichier numéro {n}") for n in range(300)]
    dropped = [
        ("Open", "Ouvrir"),  # one word
        ("Two words", "Two words"),  # not translated (a copy)
        ("line one\nline two", "ligne un\nligne deux"),  # a usage paragraph
        ("Open the file", "Ouvrir le fichier", "menu"),  # has a context
        (("%d file was removed", "%d files were removed"), ("%d fichier supprimé", "%d fichiers supprimés")),
        ("Not yet translated here", ""),
        (" ".join(["word"] * 21), " ".join(["mot"] * 21)),  # longer than MAX_MESSAGE_WORDS
    ]
    _catalogue(tmp_path / "a.mo", kept[:200] + dropped)
    # the second catalogue repeats a source (the first file's translation wins) and is a .po file
    _catalogue(tmp_path / "b.po", kept[200:] + [("Cannot open  FILE NUMBER 3", "autre traduction")])
    data = pairs.load(f"gettext:{tmp_path}")
    everything = [p for split in pairs.SPLITS for p in zip(*getattr(data, split))]
    assert sorted(everything) == sorted(kept)  # what was dropped is gone; the duplicate kept its first translation
    assert min(data.sizes.values()) > 0 and data.source == f"gettext:{tmp_path}"
    sources = [{s.lower() for s in getattr(data, split)[0]} for split in pairs.SPLITS]
    assert not (sources[0] & sources[2] or sources[0] & sources[1] or sources[1] & sources[2])
    # one file works too, and the split of a message does not depend on which files came with it
    alone = pairs.load(f"gettext:{tmp_path / 'a.mo'}")
    assert set(alone.test[0]) == {s for s in data.test[0] if s in dict(kept[:200])}


def test_the_packaged_gettext_corpus_names_the_catalogues_a_machine_lacks(tmp_path, monkeypatch):
    """(Bad catalogue files are in tests/test_bad_inputs.py, through the CLI.)"""
    from toolkit.data import translation as pairs
    from toolkit.errors import ToolkitError

    monkeypatch.setattr(pairs, "GETTEXT_LOCALE_DIR", str(tmp_path))
    with pytest.raises(ToolkitError, match=r"gettext_fr needs 74 French catalogue\(s\) this machine lacks"):
        pairs.load("gettext_fr")


@pytest.mark.skipif(not os.path.isdir("/usr/share/locale/fr/LC_MESSAGES"), reason="no French gettext catalogues")
def test_the_debian_gettext_corpus_is_large_and_split_by_source():
    from toolkit.data import translation as pairs
    from toolkit.errors import ToolkitError

    try:
        data = pairs.load("gettext_fr")
    except ToolkitError as e:
        pytest.skip(str(e))
    assert data.sizes["train"] > 20000 and data.sizes["test"] > 2000 and data.languages == ("en", "fr")
    train = {s.lower() for s in data.train[0]}
    assert not any(s.lower() in train for s in data.test[0])


@pytest.fixture(scope="module")
def translation_run(tmp_path_factory):
    """The recipe on 600 pairs of cardinals under 1000 (a TSV file), a tiny model, a few epochs."""
    from num2words import num2words

    from recipes import translation

    folder = tmp_path_factory.mktemp("translation")
    rows = [f"{num2words(n)}\t{num2words(n, lang='fr')}" for n in range(0, 1000, 1)][::1]
    (folder / "pairs.tsv").write_text("\n".join(rows[:600]) + "\n")
    argv = [
        "--data", f"tsv:{folder / 'pairs.tsv'}", "--source-length", "10", "--target-length", "10",
        "--vocabulary-size", "200", "--epochs", "6", "--batch-size", "16", "--learning-rate", "1e-2",
        "--backbone-option", "width=16", "--backbone-option", "embedding_dim=16", "--decoder-option", "width=32",
        "--decoder-option", "embedding_dim=16", "--beam-size", "2", "--output", str(folder / "out"), "--verbose", "0",
        "--seed", str(SEED),
    ]  # fmt: skip
    return translation.main(argv), str(folder / "out" / "translation")


TINY_TRANSFORMER = ["embedding_dim=32", "intermediate_dim=64", "num_heads=4", "depth=1"]


@pytest.fixture(scope="module")
def transformer_translation_run(tmp_path_factory):
    """The same pairs and epochs with a tiny Transformer encoder and Transformer decoder."""
    from recipes import translation

    folder = tmp_path_factory.mktemp("transformer_translation")
    (folder / "pairs.tsv").write_text(_number_pairs(600))
    argv = [
        "--data", f"tsv:{folder / 'pairs.tsv'}", "--source-length", "10", "--target-length", "10",
        "--vocabulary-size", "200", "--epochs", "6", "--batch-size", "16", "--learning-rate", "3e-3",
        "--backbone", "transformer", "--decoder", "transformer", "--beam-size", "2",
        *sum((["--backbone-option", o, "--decoder-option", o] for o in TINY_TRANSFORMER), []),
        "--output", str(folder / "out"), "--verbose", "0", "--seed", str(SEED),
    ]  # fmt: skip
    return translation.main(argv), str(folder / "out" / "translation")


def _number_pairs(count):
    from num2words import num2words

    return "\n".join(f"{num2words(n)}\t{num2words(n, lang='fr')}" for n in range(count)) + "\n"


@pytest.mark.slow
@pytest.mark.learned
def test_transformer_decoder_learns_and_its_cached_litert_step_decodes_as_keras(transformer_translation_run):
    """The Transformer decoder's step carries its key/value cache as state: LiteRT greedy decoding (fp32
    and dynamic-range) gives the Keras tokens on the whole test split, and the model learns."""
    result, run = transformer_translation_run
    formats = result["formats"]
    assert result["decoder"] == "transformer" and "Transformer decoder" in result["head"]
    # chrF 83.2 / 82.8 / 85.3 with seeds 0 / 1 / 2 (untrained: about 14)
    margin("keras chrF", formats["keras"]["chrf"], 60, trivial=14)
    assert formats["tflite_fp32"]["identical_to_keras"] == 1.0, formats["tflite_fp32"]
    # int8 weights change some tokens (0.89 of the gettext test split identical), not the score
    margin("dynamic-range chrF lost", formats["keras"]["chrf"] - formats["tflite_dynamic"]["chrf"], 5, higher=False)
    for name in ("encoder_fp32.tflite", "decoder_step_fp32.tflite", "decoder_step_dynamic.tflite"):
        assert os.path.isfile(os.path.join(run, name)), name
    done = cli_in_process("translate", "twenty-one", "three hundred", "--run", run, "--sampler", "beam")
    assert done.returncode == 0, done.stderr
    assert [line.split("\t")[0] for line in done.stdout.strip().splitlines()] == ["twenty-one", "three hundred"]


@pytest.mark.slow
@pytest.mark.learned
def test_translation_learns_and_litert_greedy_decoding_matches_keras(translation_run):
    result, run = translation_run
    formats = result["formats"]
    assert result["metric"] == "bleu" and result["split_sizes"]["test"] > 30
    assert os.path.isfile(os.path.join(run, "training_curves.png"))
    # 6 short epochs of a tiny model: learning, not done (untrained: chrF about 14, no exact match). BLEU is
    # not asserted: on phrases of 1-4 words it is 0 until whole 4-grams come out right.
    # Exact match is not asserted either: 6 epochs gave 0.07 with seed 0 and 0 with seed 1 (the audit).
    margin("keras chrF", formats["keras"]["chrf"], 30, trivial=14)
    assert formats["tflite_fp32"]["identical_to_keras"] == 1.0, formats["tflite_fp32"]
    assert formats["tflite_fp32"]["bleu"] == pytest.approx(formats["keras"]["bleu"])
    assert formats["tflite_fp32"]["latency_ms"] > 0 and set(formats["tflite_fp32"]["part_latency_ms"]) == {
        "encoder", "decoder_step"}  # fmt: skip
    for name in ("model.keras", "encoder_fp32.tflite", "decoder_step_fp32.tflite", "decoder_step_dynamic.tflite",
                 "vocab.txt", "target_vocab.txt", "report.json", "report.md", "test_data.npz"):  # fmt: skip
        assert os.path.isfile(os.path.join(run, name)), name
    with open(os.path.join(run, "report.json")) as f:
        report = json.load(f)
    with open(os.path.join(run, "report.md")) as f:
        assert report["samples"] and "Sample outputs" in f.read()
    assert 0 <= report["beam_search"]["bleu"] <= 100 and report["epochs_run"] == 6


@pytest.mark.slow
@pytest.mark.parametrize("trained", ["translation_run", "transformer_translation_run"])
def test_step_model_reproduces_the_teacher_forced_model_and_samplers_agree(trained, request):
    """Greedy ids fed back teacher-forced give the same argmax at every step (the step graph is the
    trained graph, for the Transformer with its cache), and KerasHub's GreedySampler driving the step
    gives the reference loop's ids."""
    import keras

    from toolkit.data import tokenizer
    from toolkit.tasks import decoding, translation

    _, run = request.getfixturevalue(trained)
    model = keras.saving.load_model(os.path.join(run, "model.keras"), safe_mode=True)
    engines = {k: decoding.keras_engine(m) for k, m in translation.parts(model).items()}
    source = tokenizer.encode(tokenizer.make(tokenizer.load_vocabulary(run), 10), ["one hundred", "forty-two", "nine"])
    greedy = translation.translate(engines, source, 9)
    target_in = np.concatenate([np.full((3, 1), translation.START), greedy], axis=1)
    logits = model.predict({"source_tokens": source, "target_tokens": target_in}, verbose=0)
    teacher_forced = np.argmax(decoding.never_pad(logits), -1)[:, :9]
    for row, forced in zip(greedy, teacher_forced):
        length = list(row).index(translation.END) + 1 if translation.END in row else len(row)
        np.testing.assert_array_equal(row[:length], forced[:length])
    sampled = translation.translate(engines, source, 9, sampler=decoding.make_sampler("greedy"))
    for row, other in zip(greedy, sampled):
        length = list(row).index(translation.END) + 1 if translation.END in row else len(row)
        np.testing.assert_array_equal(row[:length], other[:length])


@pytest.mark.slow
def test_translate_cli_and_bad_input(translation_run):
    _, run = translation_run
    done = cli_in_process("translate", "twenty-one", "three hundred", "--run", run)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert [line.split("\t")[0] for line in lines] == ["twenty-one", "three hundred"]
    _fails_with(cli_fails("translate", "one", "  ", "--run", run), "text 2: the text is empty")
    _fails_with(cli_fails("translate", b"caf\xe9", "--run", run), "text 1: not valid UTF-8")
    _fails_with(cli_fails("translate", "one", "--run", run, "--sampler", "nucleus"), "unknown sampler 'nucleus'")


def test_transformer_decoder_step_with_its_cache_gives_the_teacher_forced_logits():
    """Untrained weights, exact equivalence: feeding the target one token at a time through the cached
    step (position and key/value caches carried as state) gives every position's teacher-forced logits."""
    import keras

    from toolkit.tasks import decoding, translation

    keras.utils.set_random_seed(SEED)
    tiny = {"embedding_dim": 16, "intermediate_dim": 32, "num_heads": 2, "depth": 2}
    model = translation.build(8, 6, 40, 30, "transformer", "transformer", tiny, tiny)
    rng = np.random.default_rng(0)
    source = rng.integers(4, 40, (5, 8)).astype("int32")
    source[:, 5:] = 0
    target = rng.integers(4, 30, (5, 6)).astype("int32")
    target[:, 0] = translation.START
    forced = np.asarray(model.predict_on_batch({"source_tokens": source, "target_tokens": target}))
    parts = translation.parts(model)
    step = decoding.keras_engine(parts["decoder_step"])
    encoded = parts["encoder"].predict_on_batch({"source_tokens": source})
    state = step.zeros([k for k in step.specs if k.startswith("state_")], 5)
    assert set(encoded) == {"cross_cache_0", "cross_cache_1"} and state["state_cache_0"].shape == (5, 2, 6, 2, 8)
    for t in range(6):
        out = step({"tokens": target[:, t : t + 1], **state, **encoded, "source_tokens": source})
        np.testing.assert_allclose(out["logits"], forced[:, t], atol=1e-4, err_msg=f"position {t}")
        state = {k: out[k] for k in state}
    assert (state["state_index"] == 6).all()


def test_catalogue_data_defaults_to_the_transformer_and_flags_still_win():
    from recipes import translation as recipe

    args = recipe.parse_args(["--data", "gettext_fr"])
    assert (args.backbone, args.decoder, args.learning_rate, args.vocabulary_size) == ("transformer", "transformer",
                                                                                         1e-3, 4000)  # fmt: skip
    assert args.backbone_option == recipe.TRANSFORMER_OPTIONS
    args = recipe.parse_args(["--data", "gettext:x.po", "--decoder", "causal_rnn", "--backbone", "birnn",
                              "--learning-rate", "4e-3"])  # fmt: skip
    assert (args.backbone, args.decoder, args.learning_rate, args.backbone_option) == ("birnn", "causal_rnn", 4e-3, [])
    args = recipe.parse_args([])
    assert (args.backbone, args.decoder, args.vocabulary_size) == ("birnn", "causal_rnn", 1000)


def test_bad_translation_options_are_named(tmp_path):
    _fails_with(cli_fails("run", "translation", "--decoder", "birnn"), "no recurrent state", "causal")
    _fails_with(cli_fails("run", "translation", "--decoder", "transformer", "--decoder-option", "width=8"), "width")
    pointer = ["--decoder-option", "tied_output=True", "--decoder-option", "pointer_window=8"]
    _fails_with(cli_fails("run", "translation", *pointer), "pointer_window", "language models")
    _fails_with(cli_fails("run", "translation", "--data", f"tsv:{tmp_path / 'none.tsv'}"), "no such file")
    _fails_with(cli_fails("run", "translation", "--data", "numbers_de"), "unknown translation data source")
    _fails_with(cli_fails("translate", "one", "--run", str(tmp_path)), "encoder_fp32.tflite not found")


@pytest.mark.cross_backend
@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_step_model_matches_the_teacher_forced_model_on_other_backends(backend):
    """The decoder step built by at_length (same weights, length 1) and Luong attention agree with the
    whole teacher-forced model on jax and torch too (untrained weights: exact graph equivalence), and
    so does the Transformer decoder's cached step.
    Seeds 19 and 28 made torch's untrained decoder pick [PAD], which the teacher-forced model then
    masks and the step does not: the two diverged until decoding ruled [PAD] out."""
    from tests.conftest import run_python

    out = run_python(
        """
import keras
import numpy as np
from toolkit.tasks import decoding, translation
tiny = {"embedding_dim": 8, "intermediate_dim": 16, "num_heads": 2, "depth": 2}
for seed, encoder, decoder, options in ((0, "birnn", "causal_rnn", None), (19, "birnn", "causal_rnn", None),
                                        (28, "birnn", "causal_rnn", None), (0, "transformer", "transformer", tiny)):
    keras.utils.set_random_seed(seed)
    model = translation.build(8, 6, 40, 30, encoder, decoder,
                              encoder_options=options or {"width": 8, "embedding_dim": 8},
                              decoder_options=options or {"width": 16, "embedding_dim": 8})
    rng = np.random.default_rng(0)
    source = rng.integers(4, 40, (5, 8)).astype("int32")
    source[:, 6:] = 0
    engines = {k: decoding.keras_engine(m) for k, m in translation.parts(model).items()}
    greedy = translation.translate(engines, source, 5)
    target = np.concatenate([np.full((5, 1), translation.START), greedy], 1).astype("int32")
    logits = np.asarray(model.predict({"source_tokens": source, "target_tokens": target}, verbose=0))
    forced = decoding.never_pad(logits).argmax(-1)[:, :5]
    for row, f in zip(greedy, forced):
        n = list(row).index(translation.END) + 1 if translation.END in row else len(row)
        assert (row[:n] == f[:n]).all(), (seed, row, f)
print("ok")
""",
        backend=backend,
    )
    assert out.strip().endswith("ok")


def test_decoding_never_emits_padding_even_where_the_model_prefers_it():
    """A decoder whose output favours [PAD] by a wide margin still decodes, greedily and with every
    sampler, to real tokens only (before [END])."""
    import keras

    from toolkit.tasks import decoding, translation

    keras.utils.set_random_seed(0)
    model = translation.build(8, 6, 40, 30, encoder_options={"width": 8, "embedding_dim": 8},
                              decoder_options={"width": 16, "embedding_dim": 8})
    kernel, bias = model.get_layer("logits").get_weights()
    bias[decoding.PAD] = 50.0
    model.get_layer("logits").set_weights([kernel, bias])
    source = np.random.default_rng(0).integers(4, 40, (4, 8)).astype("int32")
    engines = {k: decoding.keras_engine(m) for k, m in translation.parts(model).items()}
    runs = {"argmax": translation.translate(engines, source, 6)}
    for name in decoding.SAMPLERS:
        runs[name] = translation.translate(engines, source, 6, sampler=decoding.make_sampler(name, seed=1))
    for name, ids in runs.items():
        for row in ids:
            n = list(row).index(translation.END) if translation.END in row else len(row)
            assert (row[:n] != decoding.PAD).all(), (name, row)


@pytest.mark.slow
def test_benchmark_scores_every_decoder_format_through_greedy_decoding(translation_run, tmp_path):
    """`toolkit benchmark` on a decoder run: encoder and step in each format, calibrated (integer ones)
    on the training pairs the run stored, scored by greedy decoding of the whole test split."""
    import shutil

    run = str(tmp_path / "run")
    shutil.copytree(translation_run[1], run)  # the module's other tests read the run's own report
    formats = "tflite_fp32,tflite_int8,tflite_int16x8,onnx"  # onnx: not a decoder format, left out
    done = run_cli("benchmark", run, "--formats", formats, "--threads", "1")
    assert done.returncode == 0, done.stderr[-2000:]
    rows = json.loads(open(os.path.join(run, "benchmark.json")).read())["formats"]
    assert set(rows) == {"keras", "tflite_fp32", "tflite_int8", "tflite_int16x8"}
    assert rows["tflite_fp32"]["identical_to_keras"] == 1.0 and rows["tflite_fp32"]["drop_points"] == 0.0
    for name in ("tflite_int8", "tflite_int16x8"):
        row = rows[name]
        assert row["status"] == "passed" and 0 <= row["bleu"] <= 100 and row["latency_ms"] > 0, (name, row)
        assert row["drop_points"] == pytest.approx(rows["keras"]["bleu"] - row["bleu"])  # BLEU is in points
        for part in ("encoder", "decoder_step"):
            assert os.path.isfile(os.path.join(run, f"{part}_{name.split('_', 1)[1]}.tflite"))
    # int16 activations decode as Keras does (1.0 measured): min/max calibration over all samples, no
    # NaN scale on the zero initial state, float I/O and a bounded attention fill. Each of those wrong
    # gave 0.0-0.19, what the quantized file shares with Keras by chance here.
    assert rows["tflite_int16x8"]["identical_to_keras"] >= 0.8, rows["tflite_int16x8"]
    # int8 too (0.97 here): the encoder's reversal matrices made with ONE_HOT, whose int8 kernel read
    # every 0 as 0.502 (ReverseRealTokens), decoded 10% of it as Keras and the default run at BLEU 6.8
    assert rows["tflite_int8"]["identical_to_keras"] >= 0.8, rows["tflite_int8"]


@pytest.mark.slow
@pytest.mark.parametrize("trained", ["translation_run", "transformer_translation_run"])
def test_decoder_task_contract(trained, request, tmp_path):
    from tests.contracts import run_decoder_contract, zeros_like_inputs
    from toolkit import saving

    model = saving.load_model(os.path.join(request.getfixturevalue(trained)[1], "model.keras"))
    run_decoder_contract("translation", model, zeros_like_inputs(model), tmp_path)


@pytest.mark.slow
def test_translation_encoder_starts_from_a_text_preset(tmp_path):
    """A `toolkit pretrain text` preset (a causal_rnn and its vocabulary) becomes the encoder: its weights
    are loaded, the source side is tokenised with its vocabulary, and the export contract still holds."""
    import keras
    from num2words import num2words

    from recipes import translation as recipe
    from toolkit import backbones
    from toolkit.backbones import presets
    from toolkit.data import tokenizer
    from toolkit.tasks import translation

    english = [num2words(n) for n in range(400)]
    vocabulary = tokenizer.train_vocabulary(english, 120)
    keras.utils.set_random_seed(SEED)
    backbone = backbones.get("causal_rnn", (10,), vocabulary_size=len(vocabulary), width=16, embedding_dim=16)
    tokenizer.save_vocabulary(vocabulary, str(tmp_path))
    preset = presets.save(tmp_path / "preset", backbone, vocabulary=str(tmp_path / "vocab.txt"))

    # the encoder of a translator built with the preset's options takes its weights exactly
    model = translation.build(10, 10, len(vocabulary), 50, "causal_rnn", "causal_rnn",
                              dict(width=16, embedding_dim=16), dict(width=16, embedding_dim=16))  # fmt: skip
    presets.load_weights(model.get_layer("encoder"), preset)
    for a, b in zip(model.get_layer("encoder").get_weights(), backbone.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)

    rows = [f"{e}\t{num2words(n, lang='fr')}" for n, e in enumerate(english)]
    (tmp_path / "pairs.tsv").write_text("\n".join(rows) + "\n")
    result = recipe.main([
        "--data", f"tsv:{tmp_path / 'pairs.tsv'}", "--source-length", "10", "--target-length", "10",
        "--vocabulary-size", "120", "--epochs", "1", "--batch-size", "32", "--backbone-preset", preset,
        "--decoder-option", "width=16", "--decoder-option", "embedding_dim=16", "--beam-size", "2",
        "--output", str(tmp_path / "out"), "--verbose", "0",
    ])  # fmt: skip
    assert result["backbone"] == "causal_rnn" and result["backbone_preset"] == preset
    assert (tmp_path / "out" / "translation" / "vocab.txt").read_text() == (tmp_path / "vocab.txt").read_text()
    assert result["formats"]["tflite_fp32"]["identical_to_keras"] == 1.0
