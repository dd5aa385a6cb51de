"""The translation peer: a KerasHub Transformer encoder-decoder (the keras.io "English-to-Spanish
translation with KerasHub" model) on our data, tokenisers, loss, schedule and metric.

    source ids -> TokenAndPositionEmbedding -> TransformerEncoder x depth -> memory
    [START] y1..yn -> TokenAndPositionEmbedding -> TransformerDecoder x depth (causal, cross-attends
    to the memory) -> Dense logits over the target WordPieces

It trains for the same wall-clock time as our attention GRU took (benchmarks/budget.py plans its
cosine schedule for the steps that fit), then decodes the whole test split greedily and is scored with
the same sacrebleu BLEU / chrF / exact match. Used by benchmarks/translation.py; not part of the
library (our recipe's model is the one with the LiteRT encoder + decoder-step contract).

Greedy decoding re-runs the decoder on the growing prefix (no key/value cache): the logits at step t
depend only on tokens < t under the causal mask, so this is exact, only slower than a cached loop.
"""

import time

import keras
import keras_hub
import numpy as np

from benchmarks.budget import fit_within
from toolkit.data import tokenizer
from toolkit.data import translation as pairs
from toolkit.tasks import registry, translation


OPTIONS = dict(embedding_dim=256, intermediate_dim=1024, num_heads=8, depth=2, dropout=0.1)  # keras.io's, 2 blocks


def build(source_length, target_length, source_vocabulary_size, target_vocabulary_size, **options):
    """{"source_tokens", "target_tokens"} -> next-token logits; OPTIONS unless `options` say otherwise."""
    o = {**OPTIONS, **options}
    embedding_dim, intermediate_dim, num_heads, depth, dropout = (
        o["embedding_dim"], o["intermediate_dim"], o["num_heads"], o["depth"], o["dropout"])  # fmt: skip
    source = keras.Input((source_length,), dtype="int32", name="source_tokens")
    target = keras.Input((target_length,), dtype="int32", name="target_tokens")
    x = keras_hub.layers.TokenAndPositionEmbedding(source_vocabulary_size, source_length, embedding_dim,
                                                   mask_zero=True, name="source_embedding")(source)  # fmt: skip
    for i in range(depth):
        x = keras_hub.layers.TransformerEncoder(intermediate_dim, num_heads, dropout=dropout, name=f"encoder_{i}")(x)
    y = keras_hub.layers.TokenAndPositionEmbedding(target_vocabulary_size, target_length, embedding_dim,
                                                   mask_zero=True, name="target_embedding")(target)  # fmt: skip
    for i in range(depth):
        y = keras_hub.layers.TransformerDecoder(intermediate_dim, num_heads, dropout=dropout, name=f"decoder_{i}")(
            y, encoder_sequence=x
        )
    y = keras.layers.Dropout(dropout)(y)
    logits = keras.layers.Dense(target_vocabulary_size, name="logits")(y)
    return keras.Model({"source_tokens": source, "target_tokens": target}, logits, name="keras_hub_transformer")


def compile_for(model, steps, learning_rate):
    """Our recipe's optimiser, schedule and loss, planned for `steps`."""
    model.compile(
        optimizer=keras.optimizers.Adam(registry.warmup_cosine(learning_rate, steps), clipnorm=1.0),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=0),
    )


def greedy(model, source_tokens, target_length, batch_size=256):
    """Token ids (N, target_length) after [START], stopping a row at [END] (ids after it are 0)."""
    outputs = []
    for i in range(0, len(source_tokens), batch_size):
        source = np.asarray(source_tokens[i : i + batch_size], np.int32)
        prefix = np.zeros((len(source), target_length), np.int32)
        prefix[:, 0] = translation.START
        done = np.zeros(len(source), bool)
        out = np.zeros((len(source), target_length), np.int32)
        for t in range(target_length):
            logits = _forward(model, source, prefix)
            token = np.where(done, 0, np.argmax(logits[:, t], -1)).astype(np.int32)
            out[:, t] = token
            done |= token == translation.END
            if done.all():
                break
            if t + 1 < target_length:
                prefix[:, t + 1] = token
        outputs.append(out)
    return np.concatenate(outputs)


def _forward(model, source, prefix):
    # predict_on_batch runs Keras' compiled predict function (an eager call per step took ~10 min here)
    return np.asarray(model.predict_on_batch({"source_tokens": source, "target_tokens": prefix}))


def run(args, data, budget_seconds, source_vocabulary, target_vocabulary, learning_rate=1e-3, **options):
    """Trains the peer for `budget_seconds` on the recipe's own tokenised batches and scores the whole
    test split. Returns a JSON-able dict."""
    keras.utils.set_random_seed(args.seed)
    tokenizers = pairs.tokenizers(source_vocabulary, target_vocabulary, args.source_length)
    train = pairs.batches(tokenizers, *data.train, args.target_length, args.batch_size, shuffle=True,
                          seed=args.seed).repeat()  # fmt: skip
    model = build(args.source_length, args.target_length, len(source_vocabulary), len(target_vocabulary), **options)
    seconds, batches = fit_within(budget_seconds, model, lambda steps: compile_for(model, steps, learning_rate),
                                  train)  # fmt: skip
    start = time.perf_counter()
    decoded = greedy(model, tokenizer.encode(tokenizers[0], data.test[0]), args.target_length)
    decode_seconds = time.perf_counter() - start
    metrics = translation.score(decoded, data.test[1], target_vocabulary)
    return {
        **metrics,
        "params": model.count_params(),
        "options": {**OPTIONS, **options},
        "learning_rate": learning_rate,
        "train_seconds": seconds,
        "pairs_seen": batches * args.batch_size,
        "epochs_seen": batches * args.batch_size / data.sizes["train"],
        "decode_seconds": decode_seconds,
        "samples": translation.texts(decoded[:12], target_vocabulary),
    }
