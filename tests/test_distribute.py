"""--distribute: the same training on 2 devices (this CPU split in two) matches one device.

JAX: keras.distribution.DataParallel over XLA_FLAGS=--xla_force_host_platform_device_count=2.
TensorFlow: tf.distribute.MirroredStrategy over 2 logical CPUs (set_logical_device_configuration).
No gradient exchange of ours: the backends all-reduce. Stated tolerance (4 epochs, resnet, batch
64): JAX, every epoch's training loss within 1% of the single-device run and >= 95% of the test
images given the same class (measured: 0.1% and 98%); TensorFlow, within 10% and >= 85%
(measured: 5% and 94%): its replicas sum gradients in another order and batch normalisation is
synchronised across replicas by Keras, so float round-off grows over the epochs. The TensorFlow
run uses an unshuffled order: MirroredStrategy clones the input pipeline, and the clone draws its
own shuffle order, which would make the two runs differ as two seeds do.
"""

import json

import pytest

from tests.conftest import SEED, margin, run_python

CODE = """
import json, numpy as np, keras, tensorflow as tf
if keras.backend.backend() == "tensorflow":
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from toolkit import training
from toolkit.data import fashion_mnist, images
from toolkit.tasks import classification
x, y = fashion_mnist.read_split({folder!r}, "train")
data = images.from_arrays(x[:640], y[:640], fashion_mnist.CLASS_NAMES)  # 512 train: 8 batches of 64
test_x, _ = data.arrays("test")
def train(distribute, run):
    devices = training.distribute(distribute)
    keras.utils.set_random_seed({seed})
    model = classification.build("resnet", data.image_shape, 10, head_dropout=0.0)
    classification.compile(model, 3e-3, 4 * 8)
    batches = images.batches(data.train, 64, shuffle={shuffle})
    history, _ = training.fit(model, batches, images.batches(data.validation, 64), 4, run, patience=9, verbose=0)
    return devices, history["loss"], model.predict(test_x.astype("float32"), verbose=0).argmax(-1)
one = train(False, {run!r} + "/one")
two = train(True, {run!r} + "/two")
print(json.dumps({{"devices": [one[0], two[0]], "loss": [one[1], two[1]], "agree": float(np.mean(one[2] == two[2]))}}))
"""


def _compare(out, loss_tolerance, agreement):
    result = json.loads(out.strip().splitlines()[-1])
    assert result["devices"] == [1, 2]
    single, double = result["loss"]
    margin("one-device loss last/first epoch", single[-1] / single[0], 0.5, trivial=1.0, higher=False)  # it learned
    worst = max(abs(a - b) / a for a, b in zip(single, double))
    margin("one/two-device loss, relative difference", worst, loss_tolerance, higher=False)
    margin("one/two-device test predictions agreeing", result["agree"], agreement)


@pytest.mark.cross_backend
@pytest.mark.learned
def test_data_parallel_on_jax_matches_one_device(fashion_small, tmp_path):
    code = CODE.format(folder=fashion_small, run=str(tmp_path), shuffle=True, seed=SEED)
    _compare(run_python(code, backend="jax", env={"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}), 0.01, 0.95)


@pytest.mark.slow
@pytest.mark.learned
def test_mirrored_strategy_on_tensorflow_matches_one_device(fashion_small, tmp_path):
    _compare(run_python(CODE.format(folder=fashion_small, run=str(tmp_path), shuffle=False, seed=SEED)), 0.1, 0.85)
