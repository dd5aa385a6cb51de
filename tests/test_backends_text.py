"""The text and graph backbones, the pointer step and the sentiment recipe on the jax and torch backends
(each in a fresh interpreter). Apart from tests/test_backends.py (the vision ones) so that pytest-xdist's
--dist loadfile can give the two files to two workers."""

import json

import pytest

from tests.conftest import SEED, margin, run_cli, run_python
from tests.test_backends import losses_fall

TEXT_FIT_PREDICT = """
import numpy as np, keras
from toolkit import backbones
assert keras.backend.backend() == {backend!r}, keras.backend.backend()
keras.utils.set_random_seed({seed})
rng = np.random.default_rng(0)
tokens = rng.integers(2, 40, (64, 10)).astype("int32")
tokens[np.arange(10)[None, :] >= rng.integers(3, 11, 64)[:, None]] = 0
labels = (tokens == 7).any(axis=1).astype("int64")
for name in backbones.names("text"):
    model = backbones.get(name, (10,), vocabulary_size=40)
    inputs = {{t.name: keras.Input(t.shape[1:], dtype=t.dtype, name=t.name) for t in model.inputs}}
    inputs = inputs if len(inputs) > 1 else inputs["tokens"]
    classifier = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(model(inputs)["pooled"]))
    classifier.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy")
    feed = tokens if len(model.inputs) == 1 else {{"tokens": tokens, "state_0": np.zeros((64, 128), "float32")}}
    history = classifier.fit(feed, labels, batch_size=16, epochs=3, verbose=0).history["loss"]
    probabilities = classifier.predict(feed, verbose=0)
    assert probabilities.shape == (64, 2) and np.isfinite(probabilities).all(), name
    print(name, "ok", history[-1] / history[0])
"""


@pytest.mark.cross_backend
@pytest.mark.learned
@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_every_text_backbone_builds_fits_and_predicts(backend):
    losses_fall(run_python(TEXT_FIT_PREDICT.format(backend=backend, seed=SEED), backend=backend), "text", 0.95)


ATTENTION_WINDOW_STEP = """
import numpy as np, keras
from toolkit.tasks import decoding, language_model
assert keras.backend.backend() == {backend!r}, keras.backend.backend()
keras.utils.set_random_seed({seed})
model = language_model.build("causal_rnn", 12, 40, 0.0, width=16, embedding_dim=16, tied_output=True,
                             pointer_window=5)
rows = np.random.default_rng(0).integers(1, 40, (4, 13)).astype("int32")
trainer = language_model.compile(model, 1e-2, 4)
before = np.asarray(model.predict(rows[:, :-1], verbose=0))
trainer.fit({{"tokens": rows[:, :-1], "targets": rows[:, 1:]}}, rows[:, 1:], epochs=2, verbose=0)
assert np.abs(np.asarray(model.predict(rows[:, :-1], verbose=0)) - before).max() > 1e-4, "the trainer trains the model"
logits = np.asarray(model.predict(rows[:, :-1], verbose=0), np.float64)
expected = np.take_along_axis(logits - np.log(np.exp(logits).sum(-1, keepdims=True)), rows[:, 1:, None], -1)[..., 0]
log_p, _ = language_model.read_along(decoding.keras_engine(language_model.parts(model)["step"]), rows)
print("max diff", float(np.abs(log_p - expected).max()))
"""


@pytest.mark.cross_backend
@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_the_pointer_window_step_matches_teacher_forcing_on(backend):
    """causal_rnn's attention window (state that slides from step to step) trains through the
    language model's trainer (the targets' log-probabilities alone) and steps alike on jax and torch."""
    out = run_python(ATTENTION_WINDOW_STEP.format(backend=backend, seed=SEED), backend=backend)
    diff = float(out.split("max diff")[-1].split()[0])
    assert diff < 1e-4, out


@pytest.mark.cross_backend
@pytest.mark.learned
def test_sentiment_recipe_trains_and_exports_from_jax(tmp_path):
    """Token ids through the .keras file to the TensorFlow export subprocess, from the JAX backend."""
    from tests.test_sentiment import _corpus

    _corpus(tmp_path / "reviews.jsonl")
    done = run_cli(
        "run", "sentiment", "--data", f"jsonl:{tmp_path / 'reviews.jsonl'}", "--text-column", "review",
        "--label-column", "verdict", "--sequence-length", "12", "--vocabulary-size", "200", "--epochs", "6",
        "--batch-size", "16", "--learning-rate", "1e-2", "--backbone-option", "width=16",
        "--output", str(tmp_path), "--verbose", "0", "--seed", str(SEED),
        backend="jax",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    formats = json.loads((tmp_path / "sentiment" / "report.json").read_text())["formats"]
    margin("keras accuracy", formats["keras"]["accuracy"], 0.8, trivial=0.5)  # balanced labels
    assert formats["tflite_fp32"]["max_abs_diff"] <= 1e-4


GRAPH_FIT_PREDICT = """
import numpy as np, keras
from toolkit import backbones
from toolkit.tasks import node_classification
assert keras.backend.backend() == {backend!r}, keras.backend.backend()
keras.utils.set_random_seed({seed})
rng = np.random.default_rng(0)
labels = (np.arange(24) >= 12).astype("int64")
adjacency = (rng.random((24, 24)) < np.where(labels[:, None] == labels[None, :], 0.5, 0.03)).astype("float32")
adjacency = np.triu(adjacency, 1); adjacency = adjacency + adjacency.T
features = (rng.normal(size=(24, 4)) + 0.5 * labels[:, None]).astype("float32")
inputs = {{"features": features[None], "adjacency": adjacency[None]}}
for name in backbones.names("graph"):
    model = node_classification.build(name, 24, 4, 2, head_dropout=0.0, dropout=0.0)
    node_classification.compile(model, 1e-2)
    history = model.fit(inputs, labels[None], epochs=30, verbose=0).history["loss"]
    probabilities = model.predict(inputs, verbose=0)
    assert probabilities.shape == (1, 24, 2) and np.isfinite(probabilities).all(), name
    print(name, "ok", history[-1] / history[0])
"""


@pytest.mark.cross_backend
@pytest.mark.learned
@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_every_graph_backbone_builds_fits_and_predicts(backend):
    losses_fall(run_python(GRAPH_FIT_PREDICT.format(backend=backend, seed=SEED), backend=backend), "graph", 0.7)
