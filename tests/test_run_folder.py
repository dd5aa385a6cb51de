import os

import pytest

from toolkit.errors import ToolkitError
from toolkit.runs import RunFolder, write_atomic


def test_run_folder_swaps_in_whole(tmp_path):
    with RunFolder(tmp_path, "demo") as run:
        write_atomic(run.file("a.txt"), "first")
        assert not (tmp_path / "demo").exists()  # nothing appears until the run finishes
    assert (tmp_path / "demo" / "a.txt").read_text() == "first"
    with RunFolder(tmp_path, "demo") as run:
        write_atomic(run.file("b.txt"), "second")
    assert sorted(os.listdir(tmp_path / "demo")) == ["b.txt"]
    assert os.listdir(tmp_path) == ["demo"]  # no staging or old folders left behind


def test_failed_run_leaves_previous_intact(tmp_path):
    with RunFolder(tmp_path, "demo") as run:
        write_atomic(run.file("model.txt"), "good")
    with pytest.raises(RuntimeError):
        with RunFolder(tmp_path, "demo") as run:
            write_atomic(run.file("model.txt"), "half")
            raise RuntimeError("export failed midway")
    assert (tmp_path / "demo" / "model.txt").read_text() == "good"
    assert os.listdir(tmp_path) == ["demo"]


@pytest.mark.parametrize("name", ["../escape", "a/b", "", ".."])
def test_run_names_cannot_escape(tmp_path, name):
    with pytest.raises(ToolkitError, match="run name"):
        RunFolder(tmp_path, name)


def test_unwritable_output_is_a_clear_error(tmp_path):
    target = tmp_path / "file"
    target.write_text("not a folder")
    with pytest.raises(ToolkitError, match="cannot write to output folder"):
        with RunFolder(target, "demo"):
            pass


def test_an_interrupted_run_resumes_with_the_same_options_only(tmp_path):
    """The options are compared as saved (JSON): a tuple option (multitask's --heads) is the same run."""
    from toolkit.runs import RESUME_DIR

    config = {"heads": ("classification",), "epochs": 8}
    with pytest.raises(RuntimeError):
        with RunFolder(tmp_path, "demo", config=config) as run:
            write_atomic(run.file(RESUME_DIR, "state.json"), "{}")  # an epoch completed, then a crash
            raise RuntimeError("killed")
    with pytest.raises(ToolkitError, match="made with epochs=8, not 9"):
        with RunFolder(tmp_path, "demo", config={**config, "epochs": 9}):
            pass
    with RunFolder(tmp_path, "demo", config=dict(config)) as run:
        assert run.resuming


def test_a_finished_run_loads_and_a_missing_or_broken_report_is_one_line(tmp_path):
    from toolkit.runs import REPORT_FILE, Run, write_labels

    with pytest.raises(ToolkitError, match=f"{REPORT_FILE} not found: is .* a finished run folder"):
        Run.load(str(tmp_path))
    (tmp_path / REPORT_FILE).write_text('{"recipe": "classif')
    with pytest.raises(ToolkitError, match=f"{REPORT_FILE} is not valid JSON") as raised:
        Run.load(str(tmp_path))
    assert "\n" not in str(raised.value)
    (tmp_path / REPORT_FILE).write_text('{"recipe": "classification", "metric": "accuracy"}\n')
    write_labels(str(tmp_path), ["cat", "dog"])
    run = Run.load(str(tmp_path))
    assert (run.recipe, run.report["metric"], run.labels()) == ("classification", "accuracy", ["cat", "dog"])
    assert run.tflite("tflite_int8") == str(tmp_path / "model_int8.tflite")
    assert run.tflite("tflite_fp32", "step") == str(tmp_path / "step_fp32.tflite")
    with pytest.raises(ToolkitError, match="model.keras not found"):
        run.require("model.keras")


def test_write_atomic_takes_a_writer_and_keeps_a_replaced_files_permissions(tmp_path):
    import numpy as np

    path = tmp_path / "arrays.npz"
    write_atomic(str(path), lambda f: np.savez(f, x=np.arange(3)))
    assert np.load(path)["x"].tolist() == [0, 1, 2]
    os.chmod(path, 0o644)
    write_atomic(str(path), b"replaced")
    assert path.read_bytes() == b"replaced" and (os.stat(path).st_mode & 0o777) == 0o644
    assert os.listdir(tmp_path) == ["arrays.npz"]  # no temporary file left
