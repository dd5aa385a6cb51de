"""One shared check for every registered text backbone: the DESIGN text contract, end to end."""

import keras
import numpy as np
import pytest

from tests.conftest import SEED
from tests.contracts import run_backbone_contract
from toolkit import backbones
from toolkit.errors import ToolkitError
from toolkit.export import litert

LENGTH, VOCABULARY = 12, 50


def _tokens(n=48, length=LENGTH, seed=0):
    """Token ids with right padding (0) of random lengths; label = does token 7 occur."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(2, VOCABULARY, (n, length)).astype(np.int32)
    lengths = rng.integers(3, length + 1, n)
    tokens[np.arange(length)[None, :] >= lengths[:, None]] = 0
    labels = (tokens == 7).any(axis=1).astype(np.int64)
    return tokens, labels


def _feed(model, tokens):
    """The model's inputs: tokens, plus zero initial states for a causal backbone."""
    if len(model.inputs) == 1:
        return tokens
    return {
        t.name: tokens if t.name == "tokens" else np.zeros((len(tokens), t.shape[1]), np.float32) for t in model.inputs
    }


@pytest.mark.slow
@pytest.mark.learned
@pytest.mark.parametrize("name", backbones.names("text"))
def test_text_backbone_contract(name, tmp_path):
    keras.utils.set_random_seed(SEED)
    model = backbones.get(name, (LENGTH,), vocabulary_size=VOCABULARY)
    tokens, labels = _tokens()
    out = model.predict(_feed(model, tokens), verbose=0)
    assert out["sequence"].shape[:2] == (len(tokens), LENGTH) and out["pooled"].shape[0] == len(tokens)

    # The shared contract with a classifier on "pooled"; LiteRT with unrolled recurrences (no TensorList
    # ops). lr 1e-3: at 3e-3 the transformer's short fit overshot once in CI (loss 0.35 -> 1.98 -> 0.86).
    def head(features):
        return keras.layers.Dense(2, activation="softmax")(features["pooled"])

    run_backbone_contract(model, _feed(model, tokens), labels, "pooled", head, tmp_path, keras.optimizers.Adam(1e-3),
                          epochs=4, loss_bar=0.95)  # fmt: skip


@pytest.mark.parametrize("name", ["birnn", "causal_rnn"])
def test_padding_is_masked_so_the_sequence_length_does_not_matter(name):
    """Padded steps leave the recurrent state alone: the same texts give the same pooled vector and
    per-token features at sequence length 12 and 20, with the same weights."""
    short = backbones.get(name, (LENGTH,), vocabulary_size=VOCABULARY)
    long = backbones.get(name, (LENGTH + 8,), vocabulary_size=VOCABULARY)
    long.set_weights(short.get_weights())
    tokens, _ = _tokens(8)
    padded = np.pad(tokens, ((0, 0), (0, 8)))
    a = short.predict(_feed(short, tokens), verbose=0)
    b = long.predict(_feed(long, padded), verbose=0)
    np.testing.assert_allclose(a["pooled"], b["pooled"], atol=1e-5)
    real = tokens > 0  # and every real token's features, both directions (what attention will read)
    np.testing.assert_allclose(a["sequence"][real], b["sequence"][:, :LENGTH][real], atol=1e-5)


def test_causal_state_carries_across_calls():
    """Running a text in two halves, feeding the first half's state into the second, equals one pass:
    what a decoder does one step at a time."""
    whole = backbones.get("causal_rnn", (LENGTH,), vocabulary_size=VOCABULARY, width=16)
    half = backbones.get("causal_rnn", (LENGTH // 2,), vocabulary_size=VOCABULARY, width=16)
    half.set_weights(whole.get_weights())
    tokens = np.random.default_rng(1).integers(2, VOCABULARY, (4, LENGTH)).astype(np.int32)
    zeros = np.zeros((4, 16), np.float32)
    one_pass = whole.predict({"tokens": tokens, "state_0": zeros}, verbose=0)
    first = half.predict({"tokens": tokens[:, : LENGTH // 2], "state_0": zeros}, verbose=0)
    second = half.predict({"tokens": tokens[:, LENGTH // 2 :], "state_0": first["state_0"]}, verbose=0)
    np.testing.assert_allclose(second["pooled"], one_pass["pooled"], atol=1e-5)
    np.testing.assert_allclose(second["sequence"], one_pass["sequence"][:, LENGTH // 2 :], atol=1e-5)


def test_tied_output_reads_the_logits_through_the_embedding_matrix_and_survives_saving(tmp_path):
    """tied_output: logits = projection(sequence) @ E^T + bias with E the input embedding, one matrix
    (fewer weights than an untied head), and a .keras round trip keeps it so."""
    from toolkit.saving import load_model

    tied = backbones.get("causal_rnn", (LENGTH,), vocabulary_size=VOCABULARY, width=16, embedding_dim=8,
                         tied_output=True)  # fmt: skip
    embedding = tied.get_layer("embedding")
    embedding.reverse_bias.assign(np.linspace(-1, 1, VOCABULARY))
    tokens, _ = _tokens(6)
    out = tied.predict(_feed(tied, tokens), verbose=0)
    projected = tied.get_layer("output_projection")(out["sequence"])
    expected = keras.ops.convert_to_numpy(projected) @ embedding.embeddings.numpy().T + embedding.reverse_bias.numpy()
    np.testing.assert_allclose(out["logits"], expected, atol=1e-5)
    assert out["logits"].shape == (6, LENGTH, VOCABULARY)
    assert tied.count_params() < backbones.get("causal_rnn", (LENGTH,), vocabulary_size=VOCABULARY, width=16,
                                              embedding_dim=8).count_params() + 16 * VOCABULARY  # fmt: skip
    tied.save(tmp_path / "tied.keras")
    again = load_model(str(tmp_path / "tied.keras"))
    np.testing.assert_allclose(again.predict(_feed(again, tokens), verbose=0)["logits"], out["logits"], atol=1e-6)


def test_bad_text_backbone_arguments_are_named():
    with pytest.raises(ToolkitError, match="input_shape \\(sequence_length,\\)"):
        backbones.get("birnn", (28, 28, 1))
    with pytest.raises(ToolkitError, match="unknown cell 'rnn'.*gru, lstm"):
        backbones.get("birnn", (8,), cell="rnn")
    with pytest.raises(ToolkitError, match="has no option heads"):
        backbones.get("transformer", (8,), heads=2)


def test_a_model_that_needs_select_tf_ops_is_refused_naming_op_and_layer(tmp_path):
    """A GRU left as a loop needs TensorList ops, which the stock interpreter lacks: say which, and where."""
    tokens = keras.Input((LENGTH,), dtype="int32")
    x = keras.layers.GRU(4, name="looped_gru")(keras.layers.Embedding(VOCABULARY, 8)(tokens))
    model = keras.Model(tokens, keras.layers.Dense(2)(x))
    litert.export_saved_model(model, str(tmp_path / "saved_model"))
    with pytest.raises(ToolkitError, match=r"tf\.TensorList\w+ \(layer looped_gru\).*unroll=True"):
        litert.convert(str(tmp_path / "saved_model"))
