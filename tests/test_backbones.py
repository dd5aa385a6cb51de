"""One shared check for every registered vision backbone: the DESIGN contract, end to end."""

import keras
import pytest

from tests.conftest import SEED
from tests.contracts import run_backbone_contract
from toolkit import backbones
from toolkit.backbones.registry import level_size
from toolkit.errors import ToolkitError

SHAPE = (32, 32, 3)


@pytest.mark.slow
@pytest.mark.learned
@pytest.mark.parametrize("name", backbones.names("vision"))
def test_backbone_contract(name, tmp_path, small_images):
    keras.utils.set_random_seed(SEED)
    model = backbones.get(name, SHAPE)

    # Pyramid: exactly P1..P5, level n at stride 2^n.
    assert sorted(model.output) == list(backbones.PYRAMID_LEVELS)
    for level, tensor in model.output.items():
        n = int(level[1])
        assert tuple(tensor.shape[1:3]) == (level_size(32, n), level_size(32, n)), level

    # Raw pixels in (normalisation is inside), then the shared contract with a classifier on pooled P5.
    def head(features):
        return keras.layers.Dense(3, activation="softmax")(keras.layers.GlobalAveragePooling2D()(features["P5"]))

    images, labels = small_images[0].astype("float32"), small_images[1]
    expected, got = run_backbone_contract(model, images, labels, "P5", head, tmp_path,
                                          keras.optimizers.SGD(0.01, momentum=0.9), epochs=4, loss_bar=0.9)  # fmt: skip
    for level in backbones.PYRAMID_LEVELS:  # every level is an output of the LiteRT file
        assert any(v.shape == expected[level].shape for v in got.values()), f"no LiteRT output shaped like {level}"


def test_counts_are_right_for_a_known_model():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", use_bias=False)(inputs)  # 8*8*4 outputs x 27 MACs
    x = keras.layers.DepthwiseConv2D(3, strides=2, padding="same")(x)  # 4*4*4 outputs x 9 MACs
    x = keras.layers.Dense(5)(keras.layers.Flatten()(x))  # 5 outputs x 64 MACs
    model = keras.Model(inputs, x)
    assert backbones.count_flops(model) == 2 * (8 * 8 * 4 * 27 + 4 * 4 * 4 * 9 + 5 * 64)
    assert backbones.count_params(model) == 4 * 27 + (4 * 9 + 4) + (64 * 5 + 5)


def test_bad_names_and_options_are_named():
    with pytest.raises(ToolkitError, match="unknown backbone 'nope'.*edgenet"):
        backbones.get("nope", SHAPE)
    with pytest.raises(ToolkitError, match="no option depth_multiplier.*width"):
        backbones.get("edgenet", SHAPE, depth_multiplier=2)
    with pytest.raises(ToolkitError, match="at least 32x32"):
        backbones.get("mobilenetv3_small", (16, 16, 3))
    with pytest.raises(ToolkitError, match="height, width, channels"):
        backbones.get("edgenet", (64, 64))
    with pytest.raises(ToolkitError, match="not a file"):
        backbones.get("mobilenetv3_small", SHAPE, weights="imagenet")


def test_width_multiplier_scales_edgenet():
    small = backbones.count_params(backbones.get("edgenet", SHAPE, width=0.5))
    large = backbones.count_params(backbones.get("edgenet", SHAPE, width=1.0))
    assert small < 0.5 * large


def test_edgenet_lite_int8_file_has_only_ops_on_the_fast_int8_path(tmp_path):
    """What makes edgenet slow in int8 (hard-swish, the squeeze-excite gate's mean, hard-sigmoid and
    broadcast multiply) is gone from edgenet_lite's int8 file: convolutions with fused ReLU6 and adds."""
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    from toolkit.export import litert

    def int8_ops(name):
        saved = str(tmp_path / name)
        litert.export_saved_model(backbones.get(name, SHAPE), saved)
        images = np.random.default_rng(0).integers(0, 256, (8, *SHAPE)).astype("float32")
        interpreter = Interpreter(model_content=litert.convert(saved, "int8", images))
        return {op["op_name"] for op in interpreter._get_ops_details()}

    lite, full = int8_ops("edgenet_lite"), int8_ops("edgenet")
    assert {"HARD_SWISH", "MEAN"} <= full  # the control: the same check finds them in edgenet
    assert not lite & {"HARD_SWISH", "MEAN", "LOGISTIC"}, lite
    assert lite <= {"CONV_2D", "DEPTHWISE_CONV_2D", "ADD", "MUL", "QUANTIZE", "DEQUANTIZE"}, lite
