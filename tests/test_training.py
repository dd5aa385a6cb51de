"""training.fit on little data: batch-norm statistics are right at the end of training (issue 15)."""

import numpy as np
import pytest

from tests.conftest import SEED, margin, run_python, tiny_scenes

# A detector's heatmap peaks on 12 training scenes after 30 steps (batch 4, 10 epochs), in inference
# mode against training mode. Keras' moving averages (momentum 0.99) have moved only 1 - 0.99^30 = 26%
# of the way from their zero/one start: without recalibration the inference peaks sat at 0.06-0.09
# against 0.6-0.84 in training mode (measured), so no box cleared the 0.05..0.3 score thresholds.
PEAK_TOLERANCE = 0.25  # worst seen: 0.068 on TensorFlow, 0.129 on torch, 0.191 on jax (tests/README.md)

CODE = """
import json, sys, tempfile
import numpy as np, keras, tensorflow as tf
sys.path.insert(0, {root!r})
from tests.conftest import tiny_scenes
from toolkit import training
from toolkit.tasks import detection
images, truth, _ = tiny_scenes(12, 1)
packed = detection.pack_ground_truth(truth, 2)
targets = {{k: np.asarray(v) for k, v in detection.encode_targets(
    packed[..., :4], packed[..., 4].astype(np.int32), (64, 64), 3).items()}}
found = {{}}
for recalibrate in (True, False):
    keras.utils.set_random_seed({seed})
    model = detection.build("resnet", (64, 64, 1), 3, neck_channels=16, head_channels=16, head_depth=1,
                            widths=(8, 16, 32, 32), stem_width=8)
    detection.compile(model, 5e-3, total_steps=30)
    data = tf.data.Dataset.from_tensor_slices((images, targets)).shuffle(12, seed={seed}).batch(4)
    run = tempfile.mkdtemp()
    training.fit(model, data, data, 10, run, patience=99, verbose=0, recalibrate=recalibrate)
    stats = [keras.ops.convert_to_numpy(v) for v in model.variables if "moving" in v.path]  # a training-mode call moves them
    peaks = {{mode: keras.ops.convert_to_numpy(model(images, training=mode)["heatmap"]).max(axis=(1, 2, 3)) for mode in (True, False)}}
    found[str(recalibrate)] = {{"gap": float(np.max(np.abs(peaks[True] - peaks[False]))),
                               "peaks": [peaks[True].tolist(), peaks[False].tolist()]}}
    if recalibrate:  # a second fit of the same run resumes its finished state: the same statistics again
        training.fit(model, data, data, 10, run, patience=99, verbose=0)
        again = [keras.ops.convert_to_numpy(v) for v in model.variables if "moving" in v.path]
        found["resumed_stats_diff"] = max(float(np.max(np.abs(a - b))) for a, b in zip(stats, again))
print(json.dumps(found))
"""


def _check(found):
    recalibrated, stale = found["True"], found["False"]
    margin("heatmap peak, |training - inference mode|", recalibrated["gap"], PEAK_TOLERANCE, higher=False)
    # the check fails without recalibration: Keras' own moving statistics miss by far more
    assert stale["gap"] > PEAK_TOLERANCE + 0.2, found  # 0.79 measured on TensorFlow
    assert found["resumed_stats_diff"] <= 1e-5, found


@pytest.mark.learned
def test_batch_norm_statistics_are_right_after_a_few_dozen_steps():
    import json
    import os

    tiny_scenes(1, 1)  # skips when Fashion-MNIST is not installed
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    _check(json.loads(run_python(CODE.format(root=root, seed=SEED)).strip().splitlines()[-1]))


@pytest.mark.cross_backend
@pytest.mark.learned
@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_batch_norm_recalibration_on_other_backends(backend):
    import json
    import os

    tiny_scenes(1, 1)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    _check(json.loads(run_python(CODE.format(root=root, seed=SEED), backend=backend).strip().splitlines()[-1]))


def test_recalibration_averages_batch_statistics_and_leaves_frozen_layers():
    import keras

    from toolkit import training

    inputs = keras.Input((3,))
    frozen = keras.layers.BatchNormalization(name="frozen")
    frozen.trainable = False
    model = keras.Model(inputs, frozen(keras.layers.BatchNormalization(name="bn")(inputs)))
    batches = [np.full((4, 3), 10.0, np.float32) + np.arange(4, dtype=np.float32)[:, None],
               np.full((4, 3), 20.0, np.float32) + 2 * np.arange(4, dtype=np.float32)[:, None]]  # fmt: skip
    assert training.recalibrate_batch_norm(model, batches) == 2
    bn = model.get_layer("bn")
    np.testing.assert_allclose(np.asarray(bn.moving_mean), [(11.5 + 23.0) / 2] * 3, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(bn.moving_variance), [(1.25 + 5.0) / 2] * 3, rtol=1e-5)
    assert bn.momentum == 0.99  # put back
    np.testing.assert_array_equal(np.asarray(model.get_layer("frozen").moving_mean), [0, 0, 0])
    from toolkit.errors import ToolkitError

    with pytest.raises(ToolkitError, match="no training batch"):
        training.recalibrate_batch_norm(model, [])


def test_the_learning_rate_schedule_is_keras_cosine_decay_built_once_per_traced_step():
    """Every task's schedule (registry.warmup_cosine) gives Keras' CosineDecay-with-warm-up values, and
    AdamW trains to the same weights with either; inside one traced step it is built once, where
    Keras' TensorFlow AdamW asks for it once per variable (weight decay): first steps 38% sooner
    (benchmarks/training_start.py)."""
    import keras
    import tensorflow as tf

    from toolkit.tasks import registry

    ours = registry.warmup_cosine(5e-3, 40)
    keras_own = keras.optimizers.schedules.CosineDecay(5e-4, 38, warmup_target=5e-3, warmup_steps=2)
    steps = np.arange(45)
    np.testing.assert_array_equal([float(ours(s)) for s in steps], [float(keras_own(s)) for s in steps])
    again = keras.optimizers.schedules.deserialize(keras.optimizers.schedules.serialize(ours))
    assert type(again) is type(ours) and again.get_config() == ours.get_config()

    step = keras.Variable(3, dtype="int64")

    @tf.function
    def twice():
        first, second = ours(step), ours(step)
        assert first is second  # built once in this graph
        return first

    assert float(twice()) == pytest.approx(float(keras_own(3)), rel=1e-6)  # graph and eager kernels may round apart
    step.assign(30)
    assert float(twice()) == pytest.approx(float(keras_own(30)), rel=1e-6)  # it reads the step: not a stale value

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(64, 5)).astype("float32"), rng.normal(size=(64, 2)).astype("float32")
    weights = []
    for schedule in (ours, keras_own):
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(2)])
        model.compile(keras.optimizers.AdamW(schedule, weight_decay=0.05), "mse")
        model.fit(x, y, batch_size=8, epochs=5, shuffle=False, verbose=0)  # 40 steps: warm-up and decay
        weights.append(model.get_weights())
    for a, b in zip(*weights):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
