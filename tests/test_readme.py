"""Every Python example in README.md runs as written (in a scratch folder, on the default backend)."""

import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BLOCKS = re.findall(r"```python\n(.*?)```", open(os.path.join(ROOT, "README.md")).read(), flags=re.S)


def test_the_readme_has_its_user_code_examples():
    assert len(BLOCKS) >= 5, "README lost its Python examples"
    assert sum("toolkit.export_model(" in block for block in BLOCKS) == 3  # image, text, graph


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(BLOCKS)), ids=lambda i: f"block{i}")
def test_readme_python_example_runs(index, tmp_path):
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3")
    done = subprocess.run([sys.executable, "-c", BLOCKS[index]], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    if "toolkit.export_model(" in BLOCKS[index]:
        # the figure per format it printed ("fmt 0.94" lines, or one {fmt: figure} dict)
        found = dict(re.findall(r"^(\w+) (\d+(?:\.\d+)?)$", done.stdout, flags=re.M))
        found.update(re.findall(r"'(\w+)': (\d+(?:\.\d+)?)", done.stdout))
        figures = {k: float(v) for k, v in found.items()}
        assert {"keras", "tflite_fp32", "tflite_int8"} <= set(figures), done.stdout[-2000:]
        # learnt (text and graph chance: 0.5; detection: ~0), and the LiteRT file scores as Keras does
        assert min(figures.values()) >= 0.6, figures
        assert abs(figures["tflite_fp32"] - figures["keras"]) <= 0.02, figures
        out = next(tmp_path.glob("saved_models/*"))
        for name in ("model.keras", "model_fp32.tflite", "model_int8.tflite", "report.json", "test_data.npz"):
            assert (out / name).is_file(), name
