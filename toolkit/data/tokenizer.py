"""Subword tokenisation outside the model, in tf.data: a KerasHub WordPiece tokenizer whose
vocabulary is learned from the training split only and saved beside the model (`vocab.txt`).

Training, evaluation and prediction all go through `make(...)` and `batches(...)`/`encode(...)`:
lower-cased, accents stripped, id 0 = [PAD] (the backbones mask it), 1 = [UNK], and every text
padded or truncated to the recipe's static sequence length (the exported graphs need it static).
"""

import os
import re

import numpy as np
import tensorflow as tf

from toolkit.data import prefetched
from toolkit.errors import ToolkitError
from toolkit.runs import VOCABULARY_FILE, write_atomic

RESERVED_TOKENS = ["[PAD]", "[UNK]"]
PAD_ID, UNK_ID = 0, 1  # their ids: the backbones mask PAD_ID, decoding never emits it


def train_vocabulary(texts, vocabulary_size, lowercase=True, strip_accents=True, reserved_tokens=RESERVED_TOKENS):
    """WordPieces learned from `texts` (the training split); `reserved_tokens` first ([PAD], [UNK], ...)."""
    import keras_hub

    if not texts:
        raise ToolkitError("cannot learn a vocabulary from no texts")
    data = tf.data.Dataset.from_tensor_slices(list(texts)).batch(1024)
    return keras_hub.tokenizers.compute_word_piece_vocabulary(
        data, vocabulary_size, lowercase=lowercase, strip_accents=strip_accents, reserved_tokens=list(reserved_tokens)
    )


def make(vocabulary, sequence_length, lowercase=True, strip_accents=True):
    """The tokenizer; sequence_length=None gives ragged ids (untruncated token streams)."""
    import keras_hub

    return keras_hub.tokenizers.WordPieceTokenizer(
        vocabulary=list(vocabulary),
        sequence_length=sequence_length,
        lowercase=lowercase,
        strip_accents=strip_accents,
        oov_token="[UNK]",
    )


def save_vocabulary(vocabulary, folder, name=VOCABULARY_FILE):
    write_atomic(os.path.join(folder, name), "\n".join(vocabulary) + "\n")


def load_vocabulary(folder, name=VOCABULARY_FILE):
    path = os.path.join(folder, name)
    if not os.path.isfile(path):
        raise ToolkitError(f"{path} not found: is {folder} a finished text run folder?")
    with open(path, encoding="utf-8") as f:
        vocabulary = f.read().splitlines()
    if vocabulary[: len(RESERVED_TOKENS)] != RESERVED_TOKENS:
        raise ToolkitError(f"{path}: expected {RESERVED_TOKENS} as the first tokens")
    return vocabulary


def batches(tokenizer, texts, labels, batch_size, shuffle=False, seed=0):
    """(token ids, label) batches: strings are tokenised per batch inside the tf.data pipeline."""
    ds = tf.data.Dataset.from_tensor_slices((list(texts), np.asarray(labels)))
    if shuffle:
        ds = ds.shuffle(len(texts), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size).map(lambda t, y: (tokenizer(t), y), num_parallel_calls=tf.data.AUTOTUNE)
    return prefetched(ds)


def encode(tokenizer, texts, batch_size=1024):
    """All texts -> int32 token ids (N, sequence_length), through the same tf.data path."""
    ds = tf.data.Dataset.from_tensor_slices(list(texts)).batch(batch_size).map(tokenizer)
    return np.concatenate([np.asarray(batch, np.int32) for batch in ds.as_numpy_iterator()])


SEQUENCE_TOKENS = ["[START]", "[END]"]  # after RESERVED_TOKENS in a decoder's vocabulary: ids 2 and 3
START_ID, END_ID = len(RESERVED_TOKENS), len(RESERVED_TOKENS) + 1
_JOINED = re.compile(r"\s*([-'’/_])\s*")  # WordPiece splits these off; they join their neighbours again
_BEFORE = re.compile(r"\s+([,.;:!?%)\]}])")
_AFTER = re.compile(r"([(\[{])\s+")


def detokenize(vocabulary, ids, stop_ids=()):
    """Token ids -> text: WordPiece continuations ("##") merged, reserved tokens dropped, and the
    spaces the tokenizer put around punctuation taken out again (exact for the embedded corpora;
    for other text, what sacrebleu's own tokenisation then splits again)."""
    words = []
    for i in ids:
        i = int(i)
        if i in stop_ids:
            break
        if i <= 0 or i >= len(vocabulary) or vocabulary[i] in RESERVED_TOKENS + SEQUENCE_TOKENS:
            continue
        piece = vocabulary[i]
        if piece.startswith("##"):  # a continuation (of the prompt's last word, when it comes first)
            words[-1:] = [(words[-1] if words else "") + piece[2:]]
        else:
            words.append(piece)
    text = _JOINED.sub(r"\1", " ".join(words))
    return _AFTER.sub(r"\1", _BEFORE.sub(r"\1", text))
