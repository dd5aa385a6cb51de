"""Decoding with a finished run folder: `toolkit generate` (language model) and `toolkit translate`.

Both load the run's vocabulary and its exported parts (LiteRT by default, or the Keras model),
tokenise raw text the way training did, and decode with the reference loop or a KerasHub sampler.
"""

import numpy as np

from toolkit.errors import ToolkitError, choose
from toolkit.runs import MODEL_FILE, TARGET_VOCABULARY_FILE, Run, tflite_file
from toolkit.tasks import decoding

FORMATS = ("keras", "tflite_fp32", "tflite_dynamic")


def load_engines(run_dir, task, fmt="tflite_fp32", threads=2):
    """{part: Engine} of a finished run, in format `fmt`."""
    from toolkit.export import pipeline
    from toolkit.export.decoding import litert_engine

    choose("format", fmt, FORMATS)
    module = pipeline.task_of(task)
    run = Run.of(run_dir, module.recipe)
    if fmt == "keras":
        path = run.require(MODEL_FILE)
        from toolkit import saving

        model = saving.load_model(path)
        return {name: decoding.keras_engine(part) for name, part in module.parts(model).items()}
    engines = {}
    for name in module.part_names:
        path = run.require(tflite_file(fmt, name))
        engines[name] = litert_engine(path, threads)
    return engines


def _check(text, where):
    from toolkit.data.texts import check_text

    return check_text(text, where)


class Generator:
    """A language-model run: prompt text -> streamed continuation."""

    def __init__(self, run_dir, fmt="tflite_fp32"):
        from toolkit.data import tokenizer

        self.engines = load_engines(run_dir, "language_model", fmt)  # first: it checks the run's recipe
        self.vocabulary = tokenizer.load_vocabulary(run_dir)
        self.tokenizer = tokenizer.make(self.vocabulary, None)

    def __call__(self, prompt, max_tokens, sampler, write=None):
        """Generates `max_tokens` WordPieces after `prompt`; `write(text)` gets the text as it grows."""
        from toolkit.data import tokenizer

        prompt = _check(prompt, "prompt")
        if max_tokens < 1:
            raise ToolkitError(f"--max-tokens must be positive, got {max_tokens}")
        ids = np.asarray(self.tokenizer([prompt])[0], np.int32).reshape(1, -1)
        if ids.shape[1] == 0:
            raise ToolkitError(f"prompt {prompt!r} has no tokens")
        step = self.engines["step"]
        state = step.zeros([k for k in step.specs if k.startswith("state_")], 1)
        generated, shown = [], [""]

        def on_token(column):
            generated.append(int(column[0]))
            text = tokenizer.detokenize(self.vocabulary, generated)
            if write and text.startswith(shown[0]):
                write(text[len(shown[0]) :])
                shown[0] = text

        decoding.sample(step, state, ids, max_tokens, sampler, on_token=on_token)
        return tokenizer.detokenize(self.vocabulary, generated)


class Translator:
    """A translation run: source texts -> translations (greedy, or a KerasHub sampler such as beam)."""

    def __init__(self, run_dir, fmt="tflite_fp32"):
        from toolkit.data import tokenizer

        self.engines = load_engines(run_dir, "translation", fmt)
        source_length = self.engines["encoder"].specs["source_tokens"][0][0]
        self.tokenizer = tokenizer.make(tokenizer.load_vocabulary(run_dir), source_length)
        self.vocabulary = tokenizer.load_vocabulary(run_dir, TARGET_VOCABULARY_FILE)
        self.max_length = 2 * source_length + 8

    def __call__(self, texts, sampler=None):
        from toolkit.tasks import translation

        texts = [_check(t, f"text {i + 1}") for i, t in enumerate(texts)]
        tokens = np.asarray(self.tokenizer(texts), np.int32)
        return translation.texts(translation.translate(self.engines, tokens, self.max_length, sampler=sampler),
                                 self.vocabulary)  # fmt: skip
