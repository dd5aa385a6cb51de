"""ONNX export and an ONNX Runtime CPU runner: the peer many users deploy with instead of LiteRT.

The export is Keras' own (`model.export(format="onnx")`, which goes through tf2onnx on the TensorFlow
backend); we add only what the benchmark needs around it: feeding our input dicts by name, naming a
multi-output model's outputs, and timing `InferenceSession.run` the way LiteRT's invoke is timed.
"""

import os

import numpy as np

from toolkit.errors import ToolkitError

INSTALL_HINT = "pip install onnxruntime onnx tf2onnx (or the toolkit's [onnx] extra)"


def available():
    """None when ONNX export and ONNX Runtime are installed, else the line that says what is missing."""
    import importlib.util

    missing = [name for name in ("onnxruntime", "onnx", "tf2onnx") if importlib.util.find_spec(name) is None]
    return f"{', '.join(missing)} not installed: {INSTALL_HINT}" if missing else None


def export(model, path, sample):
    """Writes `model` as an ONNX file (batch dimension left free). `sample`: a batch of its inputs, as
    the model takes them; Keras exports only a model that has been called, and a loaded one has not."""
    missing = available()
    if missing:
        raise ToolkitError(missing)
    model(sample)
    tmp = path + ".partial"
    model.export(tmp, format="onnx", verbose=False)
    os.replace(tmp, path)


class OnnxModel:
    """An .onnx file on ONNX Runtime's CPU provider, called like LiteRTModel: one array or a dict in,
    one array or a dict by the Keras model's output names out."""

    def __init__(self, path, threads=2, output_names=None):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # warnings about unused initialisers are not ours to act on
        self.path, self.threads = path, threads
        self.session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self.inputs = {i.name: i for i in self.session.get_inputs()}
        self.onnx_outputs = [o.name for o in self.session.get_outputs()]
        # tf2onnx names outputs Identity:0, Identity_1:0... in the order of the flattened output
        # structure: tf.nest flattens a dict in sorted key order.
        self.output_names = sorted(output_names) if output_names else None
        if self.output_names and len(self.output_names) != len(self.onnx_outputs):
            raise ToolkitError(f"{path} has {len(self.onnx_outputs)} outputs, the Keras model {len(self.output_names)}")

    def _feed(self, inputs):
        from toolkit.export.litert import _match_names

        if not isinstance(inputs, dict):
            if len(self.inputs) != 1:
                raise ToolkitError(f"{self.path} takes several inputs: pass a dict of {sorted(self.inputs)}")
            inputs = {next(iter(self.inputs)): inputs}
        names = _match_names(inputs, list(self.inputs))
        return {names[k]: np.asarray(v, _numpy_type(self.inputs[names[k]].type)) for k, v in inputs.items()}

    def __call__(self, inputs):
        outputs = self.session.run(None, self._feed(inputs))
        if self.output_names is None:
            return outputs[0] if len(outputs) == 1 else dict(zip(self.onnx_outputs, outputs))
        return dict(zip(self.output_names, outputs))

    def predict(self, inputs, batch_size=64):
        if isinstance(inputs, dict):
            count = len(next(iter(inputs.values())))
            outputs = [self({k: v[i : i + batch_size] for k, v in inputs.items()}) for i in range(0, count, batch_size)]
        else:
            outputs = [self(inputs[i : i + batch_size]) for i in range(0, len(inputs), batch_size)]
        if isinstance(outputs[0], dict):
            return {k: np.concatenate([o[k] for o in outputs]) for k in outputs[0]}
        return np.concatenate(outputs)

    def latency_ms(self, sample):
        """Batch-1 latency of session.run with the input already converted (as LiteRTModel.latency_ms)."""
        from toolkit.export.litert import median_latency_ms

        fed = self._feed(sample)
        return median_latency_ms(lambda _: self.session.run(None, fed), sample)


def _numpy_type(onnx_type):
    """'tensor(float)' -> float32, 'tensor(int32)' -> int32..."""
    names = {"float": np.float32, "double": np.float64, "int32": np.int32, "int64": np.int64, "uint8": np.uint8,
             "int8": np.int8, "bool": np.bool_, "float16": np.float16}  # fmt: skip
    return names[onnx_type[len("tensor(") : -1]]
