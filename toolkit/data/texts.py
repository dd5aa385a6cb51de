"""What every text source shares (classification tables, translation pairs, corpora, predict's
inputs): the check that a text is usable, the normalisation texts are compared by, and the split by
text hash that keeps a text in one split on every machine.
"""

import zlib

from toolkit.errors import ToolkitError


def check_text(text, where):
    """A usable text, or a ToolkitError naming `where`: bytes must be UTF-8, and not empty."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ToolkitError(f"{where}: not valid UTF-8 (byte 0x{text[e.start]:02x} at offset {e.start})") from None
    if not isinstance(text, str):
        raise ToolkitError(f"{where}: expected text, got {type(text).__name__}")
    try:
        text.encode("utf-8")  # command-line bytes that were not UTF-8 arrive as lone surrogates
    except UnicodeEncodeError as e:
        raise ToolkitError(f"{where}: not valid UTF-8 (undecodable byte at character {e.start})") from None
    if not text.strip():
        raise ToolkitError(f"{where}: the text is empty")
    return text


def normalized(text):
    return " ".join(text.lower().split())


def split_by_text(records, validation_fraction=0.1, test_fraction=0.1):
    """[(text, label)] -> {"train", "validation", "test": [(text, label)]}, deterministic, by text.

    Texts equal after normalisation are merged (texts seen with two labels are dropped: they
    cannot be scored), then each goes to the split its hash falls in, so no text is in two splits."""
    labels_of, first = {}, {}
    for text, label in records:
        key = normalized(text)
        labels_of.setdefault(key, set()).add(label)
        first.setdefault(key, text)
    splits = {"train": [], "validation": [], "test": []}
    for key, labels in labels_of.items():
        if len(labels) != 1:
            continue
        splits[split_of(key, validation_fraction, test_fraction)].append((first[key], labels.pop()))
    for name, items in splits.items():
        if not items:
            raise ToolkitError(f"{len(records)} texts are too few to split: the {name} split is empty")
    return splits


def split_of(key, validation_fraction=0.1, test_fraction=0.1):
    """The split a (normalised) key falls in, by its hash: deterministic, the same on every machine."""
    bucket = zlib.crc32(key.encode("utf-8")) % 1000 / 1000
    if bucket < test_fraction:
        return "test"
    return "validation" if bucket < test_fraction + validation_fraction else "train"
