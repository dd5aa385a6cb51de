"""Backbone presets (toolkit.backbones.presets): the folder format, loading at another input size,
on another backend, from a KerasHub preset folder, and from a finished run's backbone/."""

import json

import numpy as np
import pytest

from tests.conftest import cli_in_process, run_cli, run_python
from toolkit import backbones
from toolkit.backbones import presets

PIXELS = np.random.default_rng(3).uniform(0, 255, (2, 32, 32, 1)).astype("float32")


def _trained_like(model, seed=0):
    """Weights no initialiser would give (BN variances kept positive), so a load that did nothing shows."""
    rng = np.random.default_rng(seed)
    for weight in model.weights:
        values = rng.normal(0, 0.1, weight.shape)
        weight.assign((np.abs(values) + 0.5 if "variance" in weight.path else values).astype("float32"))
    return model


@pytest.fixture(scope="module")
def resnet_preset(tmp_path_factory):
    backbone = _trained_like(backbones.get("resnet", (32, 32, 1), widths=(8, 8, 16, 16), stem_width=8))
    path = tmp_path_factory.mktemp("presets") / "resnet_tiny"
    backbones.save_preset(path, backbone, metadata={"data": "random", "test": {"top1": 0.5}})
    np.save(path.parent / "outputs.npy", backbone(PIXELS)["P5"])
    return path, backbone


def test_preset_folder_has_kerashubs_layout_and_complete_metadata(resnet_preset):
    path, backbone = resnet_preset
    assert sorted(p.name for p in path.iterdir()) == ["config.json", "metadata.json", "model.weights.h5"]
    config = json.loads((path / "config.json").read_text())
    assert set(config) == {"module", "class_name", "config", "registered_name"}
    assert config["class_name"] == "resnet" and config["registered_name"] == "toolkit>resnet"
    # complete options: the builder's defaults are written too, so a changed default keeps old presets right
    assert config["config"] == {"input_shape": [32, 32, 1], "widths": [8, 8, 16, 16], "depths": [1, 1, 2, 1],
                                "stem_width": 8}  # fmt: skip
    meta = json.loads((path / "metadata.json").read_text())
    assert meta["parameter_count"] == backbones.count_params(backbone)
    assert meta["data"] == "random" and meta["test"] == {"top1": 0.5} and meta["kind"] == "vision"
    assert {"normalisation", "input_shape", "date", "backend", "keras_version"} <= set(meta)


def test_preset_loads_the_same_weights_at_another_input_size(resnet_preset):
    path, backbone = resnet_preset
    backbones.get("edgenet", (32, 32, 3))  # other layers built in between must not matter
    same = backbones.from_preset(path)
    np.testing.assert_allclose(same(PIXELS)["P5"], np.load(path.parent / "outputs.npy"), atol=1e-5)
    larger = backbones.from_preset(path, (64, 64, 1))
    assert larger.input_shape == (None, 64, 64, 1)
    for a, b in zip(larger.get_weights(), backbone.get_weights()):
        np.testing.assert_array_equal(a, b)
    fresh = backbones.get("resnet", (64, 64, 1), widths=(8, 8, 16, 16), stem_width=8)
    assert not np.allclose(fresh(np.tile(PIXELS, (1, 2, 2, 1)))["P5"], larger(np.tile(PIXELS, (1, 2, 2, 1)))["P5"])


def test_saving_over_a_preset_replaces_it_whole(resnet_preset, tmp_path):
    path = tmp_path / "p"
    backbones.save_preset(path, backbones.get("edgenet", (32, 32, 3), width=0.25))
    backbones.save_preset(path, resnet_preset[1])
    assert presets.read(path).backbone == "resnet"
    assert [p.name for p in tmp_path.iterdir()] == ["p"]  # no staging or old folder left beside it


def test_a_model_not_built_by_the_registry_needs_its_builder_named(tmp_path):
    import keras

    from toolkit.errors import ToolkitError

    plain = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    with pytest.raises(ToolkitError, match="not built by toolkit.backbones.get"):
        backbones.save_preset(tmp_path / "p", plain)
    assert not list(tmp_path.iterdir())


@pytest.mark.cross_backend
@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_a_preset_made_on_tensorflow_loads_on_another_backend(resnet_preset, backend):
    path, _ = resnet_preset
    out = run_python(
        f"""
import numpy as np, keras
from toolkit import backbones
assert keras.backend.backend() == {backend!r}
pixels = np.random.default_rng(3).uniform(0, 255, (2, 32, 32, 1)).astype("float32")
got = keras.ops.convert_to_numpy(backbones.from_preset({str(path)!r})(pixels)["P5"])
print("diff", float(np.abs(got - np.load({str(path.parent / "outputs.npy")!r})).max()))
""",
        backend=backend,
    )
    assert float(out.split("diff")[-1]) < 1e-4, out


def test_a_kerashub_preset_folder_loads_as_hub_resnet(tmp_path):
    import keras_hub

    hub = keras_hub.models.ResNetBackbone(
        input_conv_filters=[64], input_conv_kernel_sizes=[3], stackwise_num_filters=[64, 8, 16, 16],
        stackwise_num_blocks=[1, 1, 1, 1], stackwise_num_strides=[1, 2, 2, 2], block_type="basic_block",
        image_shape=(32, 32, 3),
    )  # fmt: skip
    _trained_like(hub, seed=1)
    hub.save_to_preset(str(tmp_path / "hub"))
    preset = presets.read(tmp_path / "hub")
    assert preset.backbone == "hub_resnet" and preset.keras_hub and preset.input_shape == (32, 32, 3)
    loaded = backbones.from_preset(tmp_path / "hub")
    assert len(loaded.get_weights()) == len(hub.get_weights())
    for a, b in zip(loaded.get_weights(), hub.get_weights()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_a_runs_backbone_preset_starts_another_recipe_and_is_listed(fashion_small, tmp_path):
    """Classification writes backbone/; a second run starts from it with --backbone-preset alone (the
    preset brings the backbone and its options), and `toolkit backbones --presets` lists both. At the
    items' own 28 px (--image-size), not the recipe's 2x upsampling, to stay fast."""
    common = ["--data", f"fashion_mnist:{fashion_small}", "--data-dir", str(tmp_path / "tfds"), "--output",
              str(tmp_path), "--epochs", "1", "--verbose", "0", "--backbone-option", "widths=(8,8,16,16)",
              "--backbone-option", "stem_width=8", "--calibration-samples", "16",
              "--image-size", "28"]  # fmt: skip
    done = run_cli("run", "classification", *common, "--backbone", "resnet")
    assert done.returncode == 0, done.stderr[-3000:]
    first = tmp_path / "classification" / "backbone"
    meta = json.loads((first / "metadata.json").read_text())
    report = json.loads((tmp_path / "classification" / "report.json").read_text())
    assert meta["trained_by"] == "classification" and meta["test"]["top1"] == report["formats"]["keras"]["top1"]
    assert "val_loss" in meta["validation"] and meta["command"] == report["command"]
    started = [a for a in common if a != "--backbone-option" and not a.startswith(("widths", "stem"))]
    done = run_cli("run", "classification", *started, "--name", "from_preset", "--backbone-preset", str(first))
    assert done.returncode == 0, done.stderr[-3000:]
    second = json.loads((tmp_path / "from_preset" / "report.json").read_text())
    assert second["backbone"] == "resnet" and second["backbone_options"]["widths"] == [8, 8, 16, 16]
    second_meta = json.loads((tmp_path / "from_preset" / "backbone" / "metadata.json").read_text())
    assert second_meta["started_from"] == str(first)
    # one epoch on top of the first backbone: starting there, it is at least as good as the first run was
    assert second["history"]["val_loss"][0] < report["history"]["val_loss"][0]
    listed = cli_in_process("backbones", "--presets", str(tmp_path))
    assert listed.returncode == 0, listed.stderr
    rows = [line for line in listed.stdout.splitlines() if "classification on" in line]
    assert len(rows) == 2 and all("resnet" in r and "28x28x1" in r for r in rows), listed.stdout
