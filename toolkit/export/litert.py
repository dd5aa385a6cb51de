"""SavedModel and LiteRT export with builtin ops only, and a runner for the stock interpreter."""

import os
import re
import time

import numpy as np

from toolkit.errors import ToolkitError


def saved_model_input_dtypes(saved_model_dir):
    """{input name: numpy dtype} of the serving signature (float32 pixels, int32 token ids...)."""
    import tensorflow as tf

    signature = tf.saved_model.load(saved_model_dir).signatures["serving_default"]
    return {k: np.dtype(spec.dtype.as_numpy_dtype) for k, spec in signature.structured_input_signature[1].items()}


def export_saved_model(model, path):
    """Needs the TensorFlow backend (other backends export through the saved .keras file)."""
    model.export(path, format="tf_saved_model", verbose=False)


QUANTIZATIONS = ("fp32", "fp16", "dynamic", "int8", "int8io", "int16x8")
INTEGER = ("int8", "int8io", "int16x8")  # calibrated on training samples


def convert(saved_model_dir, quantization="fp32", calibration_inputs=None, float_layers=()):
    """SavedModel -> .tflite bytes: fp32; fp16 (float16 weights); dynamic-range ("dynamic": int8
    weights, float activations); full-integer "int8" with float I/O; or "int8io", full-integer with
    int8 float-tensor inputs and outputs (what edge accelerators need; scales in `io_quantization`);
    or "int16x8": int8 weights with int16 activations and float I/O (256x finer activation steps, for
    models whose int8 activations lose accuracy, such as recurrent state and graph aggregation; XNNPACK
    has no 16x8 kernels, so it runs on the reference ones). The integer ones are calibrated on samples
    from the training split. int16x8 is made by ai-edge-quantizer's `static_wi8_ai16` recipe from the
    fp32 file: the converter's own 16x8 mode fails on models with integer inputs (a token model's int32
    ADD and SELECT want a calibrated range), and the quantizer is LiteRT's maintained tool for it.

    float_layers: names of Keras layers that integer files keep in float (a detector's box decoding
    and NMS: coordinates need sub-pixel steps and IoU divides); the rest is int8. This uses TFLite's
    selective quantization (QuantizationDebugger with denylisted nodes), still builtin ops only.

    Builtin ops only (no Select TF ops), so the stock ai-edge-litert interpreter runs the file.
    """
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantization == "dynamic":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif quantization == "fp16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif quantization in INTEGER:
        if calibration_inputs is None or len(calibration_inputs) == 0:
            raise ToolkitError(f"{quantization} export needs calibration samples from the training split")
        if quantization == "int16x8":
            return _int16x8(convert(saved_model_dir, "fp32"), calibration_inputs, float_layers)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        dtypes = saved_model_input_dtypes(saved_model_dir)

        def representative_dataset():
            if isinstance(calibration_inputs, dict):  # several inputs: samples by signature input name
                names = _match_names(calibration_inputs, dtypes)
                for i in range(len(next(iter(calibration_inputs.values())))):
                    yield {names[k]: np.asarray(v[i], dtypes[names[k]])[None] for k, v in calibration_inputs.items()}
            else:
                dtype = next(iter(dtypes.values()))
                for sample in calibration_inputs:
                    yield [np.asarray(sample, dtype)[None]]

        converter.representative_dataset = representative_dataset
        if quantization == "int8io":  # float inputs/outputs become int8 (integer token ids stay int32)
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
        if float_layers:
            return _selectively_quantized(converter, saved_model_dir, float_layers, quantization)
    elif quantization != "fp32":
        raise ToolkitError(f"unknown quantization {quantization!r}; valid: {', '.join(QUANTIZATIONS)}")
    try:
        return converter.convert()
    except Exception as e:  # the converter raises ConverterError and others: name the ops and their layers
        raise ToolkitError(
            f"LiteRT {quantization} conversion with builtin ops only failed: {_explain(str(e))}"
        ) from None


INT16X8_CALIBRATION_SAMPLES = 256  # the quantizer calibrates one sample per invoke, in Python


def _int16x8(fp32_model, calibration_inputs, float_layers=()):
    """fp32 .tflite bytes -> int8 weights / int16 activations (ai-edge-quantizer `static_wi8_ai16`);
    the ops whose outputs belong to `float_layers` stay float (the recipe's `no_quantize` rule)."""
    import importlib.util

    if importlib.util.find_spec("ai_edge_quantizer") is None:
        raise ToolkitError("int16x8 needs ai-edge-quantizer: pip install ai-edge-quantizer")
    from ai_edge_litert.interpreter import Interpreter
    from ai_edge_quantizer import calibrator, quantizer, recipe, recipe_manager
    from ai_edge_quantizer.utils import qsv_utils

    interpreter = Interpreter(model_content=fp32_model)
    (key,) = interpreter.get_signature_list()
    details = interpreter.get_signature_runner(key).get_input_details()
    given = calibration_inputs if isinstance(calibration_inputs, dict) else {next(iter(details)): calibration_inputs}
    names = _match_names(given, list(details))
    count = min(len(next(iter(given.values()))), INT16X8_CALIBRATION_SAMPLES)
    samples = [{names[k]: np.asarray(v[i : i + 1], details[names[k]]["dtype"]) for k, v in given.items()}
               for i in range(count)]  # fmt: skip
    rules = recipe.static_wi8_ai16()
    for layer in float_layers:
        rules.append({"regex": rf"(^|/){re.escape(layer)}(_\d+)?/", "operation": "*",
                      "algorithm_key": recipe_manager.algorithm_manager.AlgorithmName.NO_QUANTIZE})  # fmt: skip
    try:
        worker = quantizer.Quantizer(bytearray(fp32_model), rules)
        # Ranges are the extremes over all samples, as TFLite's own calibration takes them. The
        # quantizer's default, a moving average (0.95) of each sample's extremes, clips whatever is
        # rarer than one sample in a few: on a decoder's recurrent state, calibrated one step a
        # sample, it cut the range to about the typical sample's max.
        ranges = calibrator.Calibrator(bytearray(fp32_model), num_threads=1, qsv_update_func=qsv_utils.min_max_update)
        manager = recipe_manager.RecipeManager()
        manager.load_quantization_recipe(rules)
        ranges.calibrate({key: samples}, manager)
        result = worker.quantize(_nonzero_ranges(ranges.get_model_qsvs()), enable_progress_report=False)
    except Exception as e:
        raise ToolkitError(f"LiteRT int16x8 quantization failed: {str(e).strip().splitlines()[0][:300]}") from None
    from tensorflow.lite.tools import flatbuffer_utils

    quantized = bytes(result.quantized_model)
    model = flatbuffer_object(quantized)  # both repairs edit one parsed copy: one parse, one write
    repaired = [_float_io(model, fp32_model), _general_int16_scaling(model)]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model)) if any(repaired) else quantized


def _general_int16_scaling(model):
    """Sets pot_scale_int16 = False on the int16 ADDs and SUBs that TFLite's power-of-two path would
    refuse, so the kernel rescales them the general way. With the schema's default (True) the kernel
    takes that path whenever all three scales are within rounding of a power of two, and it cannot
    rescale an input whose scale is above the output's, or both inputs: a vision backbone's first ADD
    (pixels / 127.5 - 1, input [0, 2], output [-1, 1]; exact powers of two once calibration sees
    pixels of 0 and 255) failed to prepare, "add.cc: data->input1_shift <= 0 was not true" (every
    vision run, 2026-12-07). The ops the path accepts keep it: it shifts exactly, and the general
    path's 15-bit rescaling cost the generation step's int16x8 file 25 pt of perplexity when every
    ADD took it. The check is TFLite's own (kernels/add.cc and sub.cc, CheckedLog2).
    `model`: a flatbuffer object (flatbuffer_object), edited in place; returns whether it changed."""
    import math

    from tensorflow.lite.python import schema_py_generated as schema

    def log2_if_power_of_two(scale):
        if scale <= 0:
            return None
        exponent = math.log2(scale)
        return round(exponent) if abs(exponent - round(exponent)) < 1e-3 else None

    changed = False
    for graph in model.subgraphs:
        for op in graph.operators:
            options = op.builtinOptions
            if not (isinstance(options, (schema.AddOptionsT, schema.SubOptionsT)) and options.potScaleInt16):
                continue
            tensors = [graph.tensors[i] for i in (*op.inputs[:2], op.outputs[0])]
            if any(t.type != schema.TensorType.INT16 or t.quantization is None or t.quantization.scale is None
                   for t in tensors):  # fmt: skip
                continue
            exponents = [log2_if_power_of_two(float(t.quantization.scale[0])) for t in tensors]
            if None in exponents:
                continue  # the kernel takes the general path by itself
            # The path shifts one input at most, and only down: it needs an input at the output's scale
            # (shift 0) and the other at or below it.
            if max(e - exponents[2] for e in exponents[:2]) != 0:
                options.potScaleInt16, changed = False, True
    return changed


def _nonzero_ranges(qsvs):
    """A tensor that was zero on every calibration sample (a recurrence's initial state) gets the
    range [-1, 1] (zeros stay exact at any scale). With its range [0, 0] the quantizer made a scale of
    0, and the bias of the op reading it, scaled by that, became NaN (the RuntimeWarning 'invalid value
    encountered in cast'): the encoder's first recurrent step lost its bias."""
    for qsv in qsvs.values():
        low, high = qsv.get("min"), qsv.get("max")
        if low is not None and high is not None and not np.any(low) and not np.any(high):
            qsv["min"], qsv["max"] = np.full_like(low, -1.0, np.float32), np.full_like(high, 1.0, np.float32)
    return qsvs


def _float_io(model, fp32_model):
    """Every signature input and output that is float in `fp32_model` (.tflite bytes) is float in
    `model` too (a flatbuffer object, edited in place); returns whether it changed.

    ai-edge-quantizer 0.10 gets graph inputs and outputs wrong where one is used by several ops (a
    decoder step's recurrent state and attention memory; an encoder's memory, which also feeds its
    attention keys): it leaves such a tensor int16 with no QUANTIZE / DEQUANTIZE, or inserts the
    DEQUANTIZE and leaves the signature on the int16 tensor. The file then had int16 I/O where the
    format promises float, and a signature naming a tensor that is not a graph output (writing its
    metadata failed on it). Here the signature goes to the quantizer's own dequantized copy where there
    is one, and a QUANTIZE (input) or DEQUANTIZE (output) with the tensor's own scale is added where
    there is none."""
    from tensorflow.lite.python import schema_py_generated as schema

    float32 = schema.TensorType.FLOAT32

    def float_names(model):
        (signature,) = model.signatureDefs
        graph = model.subgraphs[signature.subgraphIndex]
        return {(kind, m.name) for kind in ("inputs", "outputs") for m in getattr(signature, kind)
                if graph.tensors[m.tensorIndex].type == float32}  # fmt: skip

    wanted = float_names(flatbuffer_object(fp32_model))
    (signature,) = model.signatureDefs
    graph = model.subgraphs[signature.subgraphIndex]

    def opcode(builtin):
        for i, code in enumerate(model.operatorCodes):
            if code.builtinCode == builtin:
                return i
        code = schema.OperatorCodeT()
        code.builtinCode = code.deprecatedBuiltinCode = builtin
        code.version = 4  # the first version of QUANTIZE and DEQUANTIZE that takes int16
        model.operatorCodes.append(code)
        return len(model.operatorCodes) - 1

    def float_twin(tensor, suffix):
        twin = schema.TensorT()
        twin.name, twin.type, twin.buffer = tensor.name + suffix, float32, 0
        twin.shape, twin.shapeSignature = tensor.shape, tensor.shapeSignature
        graph.tensors.append(twin)
        return len(graph.tensors) - 1

    changed = False
    for kind in ("inputs", "outputs"):
        for item in getattr(signature, kind):
            tensor = graph.tensors[item.tensorIndex]
            if (kind, item.name) not in wanted or tensor.type == float32:
                continue
            changed = True
            copies = [i for i in graph.outputs if graph.tensors[i].name == tensor.name + b"_dequant"]
            if kind == "outputs" and copies:
                item.tensorIndex = int(copies[0])
                continue
            twin = float_twin(tensor, b"_float")
            operator = schema.OperatorT()
            if kind == "inputs":  # quantize first, before every op that reads it
                operator.opcodeIndex, operator.inputs, operator.outputs = opcode(schema.BuiltinOperator.QUANTIZE), [twin], [item.tensorIndex]
                graph.operators.insert(0, operator)
            else:
                operator.opcodeIndex, operator.inputs, operator.outputs = opcode(schema.BuiltinOperator.DEQUANTIZE), [item.tensorIndex], [twin]
                graph.operators.append(operator)
            setattr(graph, kind, [twin if i == item.tensorIndex else i for i in getattr(graph, kind)])
            item.tensorIndex = twin
    return changed


def flatbuffer_object(tflite):
    """A .tflite file's bytes as TensorFlow's flatbuffer object (schema ModelT), every buffer's data
    inline. ai-edge-quantizer writes a model with 256 KiB or more of weights with its buffers after the
    flatbuffer (each buffer an offset and a size); `convert_bytearray_to_object` keeps those fields but
    not the bytes they point to, so an object re-serialised from it (our float I/O fix, the metadata)
    lost its weights and the interpreter refused the file: "Constant buffer 3 specified an out of
    range offset". TensorFlow's `read_model_from_bytearray` reads the bytes in."""
    from tensorflow.lite.tools import flatbuffer_utils

    return flatbuffer_utils.read_model_from_bytearray(bytearray(tflite))


def _selectively_quantized(converter, saved_model_dir, float_layers, quantization):
    """Quantizes everything but the ops of `float_layers` (found by layer name in the fp32 file's tensors)."""
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=convert(saved_model_dir, "fp32"))
    tensors = {interpreter._get_tensor_details(i, 0)["name"] for op in interpreter._get_ops_details()
               for i in op["outputs"]}  # fmt: skip
    # A tensor belongs to layer L when a path element is L or L_<n> (the suffix TF adds on re-use);
    # fused ops name several ops joined by ';', so search each tensor name as a whole.
    patterns = [re.compile(rf"(^|/){re.escape(layer)}(_\d+)?/") for layer in float_layers]
    denied = sorted(t for t in tensors if any(p.search(t) for p in patterns))
    if not denied:
        raise ToolkitError(f"no tensors of layers {', '.join(float_layers)} found in the model to keep in float")
    converter.target_spec.supported_ops = [*converter.target_spec.supported_ops, tf.lite.OpsSet.TFLITE_BUILTINS]
    debugger = tf.lite.experimental.QuantizationDebugger(
        converter=converter,
        debug_dataset=getattr(converter.representative_dataset, "input_gen", converter.representative_dataset),
        debug_options=tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=denied),
    )
    try:
        return debugger.get_nondebug_quantized_model()
    except Exception as e:
        raise ToolkitError(
            f"LiteRT {quantization} conversion with builtin ops only failed: {_explain(str(e))}"
        ) from None


def _explain(message):
    """The converter's report -> "op tf.X (layer L), ...": which ops are not builtin, and where."""
    found = {}
    for location, op in re.findall(r"loc\((.*?)\)\)*: .*?'(tf\.\w+)' op", message):
        # the first path element is the model ("functional_3"), the second the layer ("gru_1")
        layers = re.findall(r'"[^"/:]+/([A-Za-z0-9_]+?)(?:_\d+)?/', location)
        found.setdefault(op, set()).update(layers)
    if not found:
        lines = [line.strip() for line in message.splitlines() if line.strip()]
        return "; ".join(line for line in lines if "op" in line.lower())[:500] or (lines[0] if lines else "unknown")
    parts = [f"{op} (layer {', '.join(sorted(layers)) or '?'})" for op, layers in found.items()]
    hint = ""
    if any("TensorList" in op or "While" in op for op in found):
        hint = " (recurrent layers: build them with unroll=True and a static sequence length)"
    return "these ops have no builtin LiteRT kernel: " + ", ".join(parts) + hint


def _match_names(given, signature_names):
    """Our input names -> the runtime's (which may carry a prefix or suffix such as serving_default_...:0)."""
    found = {}
    for name in given:
        matches = (
            [s for s in signature_names if s in (name, f"serving_default_{name}:0")]  # "tokens" vs "source_tokens"
            or [s for s in signature_names if name in s]
        )
        if len(matches) != 1:
            raise ToolkitError(f"input {name!r} does not match one of {sorted(signature_names)}")
        found[name] = matches[0]
    return found


class LiteRTModel:
    """A .tflite file on the stock interpreter (XNNPACK), called like a model on numpy batches."""

    def __init__(self, path, threads=2):
        from ai_edge_litert.interpreter import Interpreter

        self.path, self.threads = path, threads
        self.interpreter = Interpreter(model_path=path, num_threads=threads)
        self.runner = self.interpreter.get_signature_runner()
        self.input_dtypes = {name: d["dtype"] for name, d in self.runner.get_input_details().items()}
        # int8 I/O: (scale, zero point) per quantized tensor; float data is (de)quantized here.
        self.input_quantization = _quantization(self.runner.get_input_details())
        self.output_quantization = _quantization(self.runner.get_output_details())
        self.input_name, self.input_dtype = next(iter(self.input_dtypes.items()))
        self.output_names = sorted(self.runner.get_output_details())

    def __call__(self, inputs):
        """One array for a one-input model, or a dict by input name (e.g. tokens and state_0); one array
        back from a one-output model, else a dict by output name."""
        outputs = self.outputs(inputs)
        if len(outputs) == 1:
            return next(iter(outputs.values()))
        return outputs

    def outputs(self, inputs):
        """As __call__, but always {output name: array} (a decoder part's outputs feed the loop by name)."""
        if not isinstance(inputs, dict):
            if len(self.input_dtypes) != 1:
                raise ToolkitError(f"{self.path} takes several inputs: pass a dict of {sorted(self.input_dtypes)}")
            inputs = {self.input_name: inputs}
        if len(inputs) != len(self.input_dtypes):
            raise ToolkitError(f"{self.path} takes inputs {sorted(self.input_dtypes)}, got {sorted(inputs)}")
        names = _match_names(inputs, self.input_dtypes)
        outputs = self.runner(**{names[k]: self._to_input(names[k], v) for k, v in inputs.items()})
        return {k: _dequantize(v, *self.output_quantization[k]) if k in self.output_quantization else v
                for k, v in outputs.items()}  # fmt: skip

    def _to_input(self, name, value):
        dtype = self.input_dtypes[name]
        if name in self.input_quantization:
            return _quantize(value, dtype, *self.input_quantization[name])
        return np.asarray(value, dtype)

    def io_quantization(self):
        """{"inputs"/"outputs": {name: {"scale", "zero_point"}}} for int8 I/O files (what a device feeds)."""
        return {
            side: {k: {"scale": s, "zero_point": z} for k, (s, z) in table.items()}
            for side, table in (("inputs", self.input_quantization), ("outputs", self.output_quantization))
        }

    def latency_ms(self, sample):
        """Batch-1 latency of the interpreter's invoke() alone (input already in place): the model's
        own time, without the Python wrapper's per-call overhead, which is larger than a small model."""
        from ai_edge_litert.interpreter import Interpreter

        interpreter = Interpreter(model_path=self.path, num_threads=self.threads)  # the runner pins its own
        details = interpreter.get_input_details()
        samples = sample if isinstance(sample, dict) else {details[0]["name"]: sample}
        names = _match_names(samples, [d["name"] for d in details])
        by_name = {d["name"]: d for d in details}
        for key, value in samples.items():
            interpreter.resize_tensor_input(by_name[names[key]]["index"], value.shape)
        interpreter.allocate_tensors()
        for key, value in samples.items():
            detail = by_name[names[key]]
            scale, zero_point = detail["quantization"]
            if scale and np.issubdtype(detail["dtype"], np.integer) and not np.issubdtype(value.dtype, np.integer):
                value = _quantize(value, detail["dtype"], scale, zero_point)
            interpreter.set_tensor(detail["index"], np.asarray(value, detail["dtype"]))
        return median_latency_ms(lambda _: interpreter.invoke(), sample)

    def predict(self, inputs, batch_size=64):
        if isinstance(inputs, dict):
            count = len(next(iter(inputs.values())))
            batches = [{k: v[i : i + batch_size] for k, v in inputs.items()} for i in range(0, count, batch_size)]
        else:
            batches = [inputs[i : i + batch_size] for i in range(0, len(inputs), batch_size)]
        outputs = [self(batch) for batch in batches]
        if isinstance(outputs[0], dict):
            return {k: np.concatenate([o[k] for o in outputs]) for k in outputs[0]}
        return np.concatenate(outputs)


_PROBE = """
import sys, numpy as np
from ai_edge_litert.interpreter import Interpreter
runner = Interpreter(model_path=sys.argv[1], num_threads=1).get_signature_runner()
runner(**{k: np.zeros(d["shape"], d["dtype"]) for k, d in runner.get_input_details().items()})
"""


def probe(path):
    """Loads and invokes `path` once on zeros in a child process. Some converter outputs make the
    interpreter abort the process on invoke (an int8 ADD whose scales need a rescale above 1: the
    language model's pointer before it stayed float), which no Python `try` can catch; probed first,
    such a file becomes a clear ToolkitError (a benchmark row, with the child's last words) instead
    of killing the run."""
    import signal
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", _PROBE, path], capture_output=True, text=True)
    if done.returncode:
        how = f"signal {signal.Signals(-done.returncode).name}" if done.returncode < 0 else f"exit {done.returncode}"
        said = [line.strip() for line in done.stderr.splitlines() if line.strip() and not line.startswith("INFO:")]
        raise ToolkitError(f"the LiteRT interpreter cannot run {os.path.basename(path)} ({how} on its first invoke"
                           + (f": {said[-1][:300]})" if said else ")"))  # fmt: skip


def _quantization(details):
    found = {}
    for name, d in details.items():
        scales = d.get("quantization_parameters", {}).get("scales", [])
        if np.issubdtype(d["dtype"], np.integer) and len(scales) == 1 and scales[0] > 0:
            found[name] = (float(scales[0]), int(d["quantization_parameters"]["zero_points"][0]))
    return found


def _quantize(values, dtype, scale, zero_point):
    info = np.iinfo(dtype)
    return np.clip(np.round(np.asarray(values, np.float32) / scale + zero_point), info.min, info.max).astype(dtype)


def _dequantize(values, scale, zero_point):
    return (np.asarray(values, np.float32) - zero_point) * scale


# The least time one latency figure is measured for (seconds). The test suite sets it to 0
# (tests/conftest.py): its runs check that each format is timed, not how fast, and at 1 s a format the
# clock was a few seconds of every exported run (py-spy). Benchmarks and users keep the default.
LATENCY_SECONDS_ENV = "TOOLKIT_LATENCY_SECONDS"


def median_latency_ms(call, sample, warmup=10, min_runs=50, min_seconds=None):
    """Batch-1 latency: warm-up, then the median (and 90th percentile) of at least min_runs calls over
    at least min_seconds (default 1 s, or $TOOLKIT_LATENCY_SECONDS; below 1 s, the runs scale down with
    it: 0 gives 2 warm-up and 5 timed calls)."""
    if min_seconds is None:
        min_seconds = float(os.environ.get(LATENCY_SECONDS_ENV, "1"))
        if min_seconds < 1:
            warmup, min_runs = max(2, round(warmup * min_seconds)), max(5, round(min_runs * min_seconds))
    for _ in range(warmup):
        call(sample)
    times = []
    start = time.perf_counter()
    while len(times) < min_runs or time.perf_counter() - start < min_seconds:
        t = time.perf_counter()
        call(sample)
        times.append((time.perf_counter() - t) * 1000)
        if len(times) >= 5000:
            break
    return float(np.median(times)), float(np.percentile(times, 90))


def size_bytes(path):
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)
