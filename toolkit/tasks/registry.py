"""The task registry: one spec object per task, what the CLI, predict, benchmark, export and loading
dispatch through (as the backbone registry does for backbones, and Model Garden's `Task` for tasks).

A task module keeps its functions (`build`, `compile`, `score`...: recipes and user code call them
as they are) and registers one `Task` naming them; `toolkit.tasks.get(name)` returns it. Optional
parts have a stated default here instead of an `hasattr` probe at each use: a task without its own
`compare` compares by the largest output difference alone, one without `inference_model` exports its
training graph, one without `raw_model` has no pre-post-processing maps to check. A decoder
(`DecoderTask`) adds the parts it is exported as and the decoding loop that verifies them.

Models stay functional `keras.Model`s: a spec holds no model and no state.
"""

import dataclasses
from typing import Callable, Optional

import keras

from toolkit.errors import ToolkitError, choose

LITERT_FORMATS = ("tflite_fp32", "tflite_int8")


def _identity(model):
    return model


def _no_figures(outputs, reference):
    return {}


def points_lost(keras_score, score):
    """What an export loses against Keras, in points of a 0..1 metric (accuracy, mAP, mIoU)."""
    return (keras_score - score) * 100


@dataclasses.dataclass(frozen=True)
class Task:
    """name: the task; recipe: the recipe whose run folders it makes (`toolkit run RECIPE`, the run's
    report.json "recipe"); metric: the headline metric `score` returns (higher is better unless the
    task says otherwise); build(backbone=..., ...) -> training model; compile(model, learning_rate,
    total_steps, **options); score(outputs, labels) -> {metric: value, ...} on the inference model's
    outputs; compare(outputs, reference) -> agreement figures of an export with Keras beyond the
    largest difference; inference_model(model) -> the exported graph (post-processing inside);
    raw_model(model) -> the graph up to its post-processing, or None; litert_formats: the LiteRT
    files a run writes; float_layers: layers an int8 file keeps in float; drop(keras score, score) ->
    what an export loses against Keras in points (positive: worse), which `toolkit benchmark --floor`
    bounds (a 0..1 metric's points unless the task says otherwise)."""

    name: str
    recipe: str
    metric: str
    build: Callable
    compile: Callable
    score: Callable
    compare: Callable = _no_figures
    inference_model: Callable = _identity
    raw_model: Optional[Callable] = None
    litert_formats: tuple = LITERT_FORMATS
    float_layers: tuple = ()
    description: str = ""
    drop: Callable = points_lost

    @property
    def is_decoder(self):
        return False

    def float_layers_of(self, model):
        """The task's float layers that this model holds, nested models included (a multi-task model
        without its detection head has no decoder to keep in float; a language model's step holds
        its pointer one level down, in its decoder)."""
        names, models = set(), [model]
        while models:
            for layer in models.pop().layers:
                names.add(layer.name)
                if isinstance(layer, keras.Model):
                    models.append(layer)
        return tuple(layer for layer in self.float_layers if layer in names)


@dataclasses.dataclass(frozen=True)
class DecoderTask(Task):
    """A task verified through a decoding loop: parts(model) -> {part name: keras.Model} (encoder, the
    step run once per token...), evaluate(engines, data) -> (metrics, decoded ids) with one engine
    (Keras or LiteRT) per part; part_names as parts() returns them; step_part: the part whose latency
    is the per-token cost; verb: the CLI command that decodes with its runs."""

    parts: Callable = None
    evaluate: Callable = None
    part_names: tuple = ()
    step_part: str = ""
    verb: str = ""  # the toolkit command that decodes with its runs (toolkit predict points to it)

    @property
    def is_decoder(self):
        return True


_TASKS = {}


def register(task):
    """Adds `task` to the registry (one name, one recipe each) and returns it."""
    for other in _TASKS.values():
        if other.name == task.name or other.recipe == task.recipe:
            raise ValueError(f"task {task.name!r} (recipe {task.recipe!r}) is registered twice")
    if task.is_decoder and (task.parts is None or task.evaluate is None or task.step_part not in task.part_names):
        raise ValueError(f"decoder task {task.name!r} needs parts, evaluate and a step_part among its part_names")
    _TASKS[task.name] = task
    return task


def get(name):
    """The registered task `name`; a one-line error listing the registered ones otherwise."""
    return _TASKS[choose("task", name, _TASKS)]


def names():
    return list(_TASKS)


def recipes():
    """Recipe names, in registration order."""
    return [t.recipe for t in _TASKS.values()]


def for_recipe(recipe):
    """The task whose runs the recipe `recipe` makes (report.json's "recipe")."""
    found = {t.recipe: t for t in _TASKS.values()}
    return found[choose("recipe", recipe, found)]


# ----- what every task shares -----


def backbone_of(model):
    """The nested backbone model of a task model (what a backbone preset carries between tasks)."""
    nested = [layer for layer in model.layers if isinstance(layer, keras.Model)]
    if len(nested) != 1:
        raise ToolkitError(f"{model.name} should hold exactly one backbone model, found {len(nested)}")
    return nested[0]


def warmup_cosine(learning_rate, total_steps, warmup_fraction=0.05):
    """Every task's learning-rate schedule: linear warm-up from learning_rate / 10 over the first
    warmup_fraction of the steps, then cosine decay to 0 (Keras' CosineDecay with warm-up, the same
    values, computed without a graph conditional: WarmupCosineDecay)."""
    warmup = max(1, int(total_steps * warmup_fraction))
    return WarmupCosineDecay(
        learning_rate / 10, max(1, total_steps - warmup), warmup_target=learning_rate, warmup_steps=warmup
    )


@keras.saving.register_keras_serializable(package="toolkit")
class WarmupCosineDecay(keras.optimizers.schedules.CosineDecay):
    """Keras' CosineDecay with warm-up, value for value, cheaper to trace on TensorFlow.

    Why our own: Keras' TensorFlow AdamW evaluates the schedule once per variable for weight decay
    (TFOptimizer._apply_weight_decay), so tracing a train step built the schedule's ops, a `cond` of
    two function graphs among them, once per variable: for a small detector (69 variables) that was
    about a fifth of the train function's tracing (py-spy), paid by every training before its first
    step. Here `where` takes the place of `cond` (both branches are a few scalar ops; it picks the
    value `cond` would have run), and inside one traced TensorFlow graph the schedule is built once
    for a given step variable and reused: every call within a train step reads the same step."""

    _traced = None  # (graph, step, value) of the last TensorFlow graph this schedule was built into

    def __call__(self, step):
        graph = _tracing_graph()
        if graph is not None and self._traced is not None and self._traced[0] is graph and self._traced[1] is step:
            return self._traced[2]
        value = self._value(step)
        if graph is not None:
            self._traced = (graph, step, value)
        return value

    def _value(self, step):
        if self.warmup_target is None:
            return super().__call__(step)
        from keras import ops

        with keras.name_scope(self.name):
            initial = ops.convert_to_tensor(self.initial_learning_rate)
            dtype = initial.dtype
            decay_steps, warmup_steps = ops.cast(self.decay_steps, dtype), ops.cast(self.warmup_steps, dtype)
            target = ops.cast(self.warmup_target, dtype)
            step = ops.minimum(ops.cast(step, dtype), decay_steps + warmup_steps)
            warming = self._warmup_function(step, warmup_steps, target, initial)
            decaying = self._decay_function(step - warmup_steps, decay_steps, target, dtype)
            return ops.where(step < warmup_steps, warming, decaying)


def _tracing_graph():
    """The TensorFlow graph being traced (a tf.function's), or None: eager execution, other backends."""
    if keras.backend.backend() != "tensorflow":
        return None
    import tensorflow as tf

    return tf.compat.v1.get_default_graph() if tf.inside_function() else None
