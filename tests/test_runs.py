import json

import pytest

from superpose import runs


def test_atomic_write_leaves_old_file_when_writer_fails(tmp_path):
    target = tmp_path / "metrics.json"
    runs.write_json(target, {"a": 1})

    def broken(path):
        path.write_text('{"a": 2, "half')
        raise KeyboardInterrupt  # an interruption mid-write

    with pytest.raises(KeyboardInterrupt):
        runs.atomic_write(target, broken)
    assert json.loads(target.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]   # no temp file left


def test_run_folders_never_reuse_a_name(tmp_path):
    a = runs.Run.create("exp", out=tmp_path, name="r")
    b = runs.Run.create("exp", out=tmp_path, name="r")
    assert a.path == tmp_path / "exp" / "r" and b.path == tmp_path / "exp" / "r-1"


def test_json_handles_tensors_dataclasses_and_nonfinite(tmp_path):
    import torch

    from superpose import toy

    run = runs.Run.create("exp", out=tmp_path)
    run.save_config({"toy": toy.ToyConfig(n_instances=2, feature_probability=[1, 0.5])})
    run.save_metrics({"loss": torch.tensor([0.1, float("inf")])})
    cfg = json.loads((run.path / "config.json").read_text())
    assert cfg["toy"]["feature_probability"] == [1.0, 0.5]
    assert json.loads((run.path / "metrics.json").read_text())["loss"] == [
        pytest.approx(0.1), "inf"]


def test_read_json_on_corrupt_file(tmp_path):
    (tmp_path / "x.json").write_text("{nope")
    with pytest.raises(ValueError, match="is not valid JSON"):
        runs.read_json(tmp_path / "x.json")


def test_saved_folder_names_what_is_missing(tmp_path):
    from superpose.runs import saved_folder

    with pytest.raises(FileNotFoundError, match=r"is not a folder; expected a saved X holding "
                                                r"a\.json and b\.bin"):
        saved_folder(tmp_path / "nope", ("a.json", "b.bin"), "a saved X")
    (tmp_path / "a.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match=r"has no b\.bin; it is not a saved X "
                                                r"\(expected a\.json and b\.bin\)"):
        saved_folder(tmp_path, ("a.json", "b.bin"), "a saved X")
    (tmp_path / "b.bin").write_bytes(b"")
    assert saved_folder(str(tmp_path), ("a.json", "b.bin"), "a saved X") == tmp_path
