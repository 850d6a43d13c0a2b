"""Hostile input for results folders, JSON files, saved models and tokenizer files (issue 13):
every broken file is one error naming it and what is wrong, a failed or killed write never
destroys the previous version, and nothing escapes its folder. Unit tier."""

from __future__ import annotations

import json
import os

import pytest
import torch

from superpose import runs, toy
from superpose.gpt import tokenizers

# ---- runs.read_json / write_json -----------------------------------------------------------


@pytest.mark.parametrize("content, kind, message", [
    (b"\x80\x81\xff{}", None, r"is not valid JSON: it is not UTF-8 text \(byte 0 is b'\\x80'\)"),
    (b"", None, r"is not valid JSON \(it is empty\)"),
    (b" \n\t", None, r"is not valid JSON \(it is empty\)"),
    (b'{"a": [1, 2', None, r"is not valid JSON \(Expecting ',' delimiter"),
    (b'{"lr": NaN}', None, r"is not valid JSON: it holds NaN, which JSON does not have"),
    (b'{"lr": Infinity}', None, r"it holds Infinity, which JSON does not have"),
    (b'[-Infinity]', None, r"it holds -Infinity, which JSON does not have"),
    (b"[" * 100_000 + b"]" * 100_000, None, r"is not readable JSON: it is nested too deeply"),
    (b"1" * 5000, None, r"is not readable JSON \(Exceeds the limit"),
    (b"[1, 2]", dict,
     r"is corrupt: it holds an array where an object is expected; it should be a config"),
    (b'"x"', dict, r"is corrupt: it holds a string where an object is expected"),
    (b"null", dict, r"is corrupt: it holds null where an object is expected"),
    (b"{}", list, r"is corrupt: it holds an object where an array is expected"),
])
def test_read_json_turns_every_broken_file_into_one_value_error(tmp_path, content, kind,
                                                                 message):
    path = tmp_path / "cfg.json"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=r"cfg\.json .*" + message):
        runs.read_json(path, kind=kind, what="a config")


def test_read_json_folders_missing_files_and_a_byte_order_mark(tmp_path):
    with pytest.raises(ValueError, match=r"is a folder, not a JSON file; it should be a config"):
        runs.read_json(tmp_path, what="a config")
    with pytest.raises(FileNotFoundError, match=r"nope\.json does not exist"):
        runs.read_json(tmp_path / "nope.json")
    (tmp_path / "bom.json").write_bytes(b"\xef\xbb\xbf" + b'{"a": 1}')   # Windows editors
    assert runs.read_json(tmp_path / "bom.json", kind=dict) == {"a": 1}


def test_write_json_refuses_what_json_cannot_hold_and_leaves_the_file(tmp_path):
    path = runs.write_json(tmp_path / "m.json", {"a": 1})
    with pytest.raises(ValueError, match=r"cannot write .*m\.json: the value is not JSON "
                                         r"\(Object of type object is not JSON serializable"):
        runs.write_json(path, {"a": object()})
    cycle: list = []
    cycle.append(cycle)
    with pytest.raises(ValueError, match=r"the value is not JSON \(it refers to itself\)"):
        runs.write_json(path, cycle)
    assert runs.read_json(path) == {"a": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json"]
    with pytest.raises(ValueError, match=r"is a folder; pass the path of a file to write"):
        runs.write_json(tmp_path, {"a": 1})


def test_non_finite_numbers_are_written_as_strings_and_refused_by_a_config(tmp_path):
    run = runs.Run.create("exp", out=tmp_path)
    run.save_metrics({"loss": [1.0, float("nan"), float("-inf")]})
    assert runs.read_json(run.path / "metrics.json") == {"loss": [1.0, "nan", "-inf"]}
    folder = toy.ToyModel(toy.ToyConfig(n_features=5, n_hidden=2), device="cpu").save(
        tmp_path / "m")
    cfg = runs.read_json(folder / "config.json")
    runs.write_json(folder / "config.json", {**cfg, "feature_probability": float("inf")})
    with pytest.raises(ValueError, match=r"config\.json: feature_probability must be a finite "
                                         r"number in \(0, 1\].*got 'inf'"):
        toy.ToyModel.load(folder)


# ---- saved models (save_module / load_module) ----------------------------------------------


def _toy(seed=1):
    return toy.ToyModel(toy.ToyConfig(n_features=5, n_hidden=2, seed=seed), device="cpu")


def _fail_save_file(monkeypatch):
    import safetensors.torch as st

    def fail(tensors, path):
        with open(path, "wb") as f:
            f.write(b"half a file")
        raise OSError("disk full")
    monkeypatch.setattr(st, "save_file", fail)


def test_a_failed_save_leaves_the_old_one_whole_and_no_leftovers(tmp_path, monkeypatch):
    model = _toy(1)
    folder = model.save(tmp_path / "m")
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors",
                                                        "saved.json"]
    with monkeypatch.context() as m:
        _fail_save_file(m)
        with pytest.raises(OSError, match="disk full"):
            _toy(2).save(folder)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]
    assert torch.equal(toy.ToyModel.load(folder).W, model.W)
    other = _toy(2)
    other.save(folder)                              # a good save replaces the folder whole
    assert torch.equal(toy.ToyModel.load(folder).W, other.W)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_a_killed_save_is_found_and_its_leftovers_go_with_the_next_save(tmp_path):
    folder = _toy(1).save(tmp_path / "m")
    leftover = tmp_path / ".tmp-m-abcd1234"         # a save killed before its rename
    leftover.mkdir()
    (leftover / "model.safetensors").write_bytes(b"half")
    unrelated = tmp_path / ".tmp-mm-abcd1234"
    unrelated.mkdir()
    _toy(2).save(folder)
    assert not leftover.exists() and unrelated.exists()
    folder.rename(tmp_path / ".m.previous")          # killed between the two renames
    with pytest.raises(FileNotFoundError, match=r"m does not exist: a save into it was "
                                                r"interrupted; the previous save is whole at "
                                                r".*\.m\.previous \(rename it back\)"):
        toy.ToyModel.load(tmp_path / "m")
    _toy(3).save(tmp_path / "m")                     # the next save cleans the old copy
    assert not (tmp_path / ".m.previous").exists()


def test_changed_weights_fail_the_hash_and_old_saves_still_load(tmp_path):
    model = _toy(1)
    folder = model.save(tmp_path / "m")
    weights = folder / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-3] ^= 0xFF                                 # one garbled byte inside a weight
    weights.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"model\.safetensors is corrupt: it does not match "
                                         r"its SHA-256 in saved\.json: it changed after the "
                                         r"model was saved"):
        toy.ToyModel.load(folder)
    model.save(folder)
    (folder / "saved.json").unlink()                 # a save from before saved.json existed
    assert torch.equal(toy.ToyModel.load(folder).W, model.W)


@pytest.mark.parametrize("content, message", [
    (b"[]", r"saved\.json is corrupt: it holds an array where an object is expected; it "
            r"should be the SHA-256 of model\.safetensors"),
    (b"\xff\xfe\x00", r"saved\.json is not valid JSON: it is not UTF-8 text"),
    (b'{"files": {"model.safetensors": 7}}', r"saved\.json is corrupt: expected "),
    (b'{"files": {"other.bin": "00"}}', r"saved\.json is corrupt: expected "),
    (b'{"files": []}', r"saved\.json is corrupt: expected "),
])
def test_a_broken_saved_json_is_one_value_error(tmp_path, content, message):
    folder = _toy().save(tmp_path / "m")
    (folder / "saved.json").write_bytes(content)
    with pytest.raises(ValueError, match=message):
        toy.ToyModel.load(folder)


def _legacy(tmp_path, state=None):
    """A folder as saves before saved.json wrote it (no hash), with these weights."""
    from safetensors.torch import save_file

    model = _toy()
    folder = model.save(tmp_path / "m")
    (folder / "saved.json").unlink()
    if state is not None:
        save_file(state(model.state_dict()), str(folder / "model.safetensors"))
    return folder


def test_unreadable_nan_or_integer_weights_are_refused_naming_the_tensor(tmp_path):
    folder = _legacy(tmp_path)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10])  # truncated
    with pytest.raises(ValueError, match=r"model\.safetensors is corrupt and cannot be read"):
        toy.ToyModel.load(folder)
    weights.write_bytes(b"\x00" * 3)
    with pytest.raises(ValueError, match=r"model\.safetensors is corrupt and cannot be read"):
        toy.ToyModel.load(folder)

    def nan(sd):
        return {k: (t.clone().fill_(float("nan")) if k == "W" else t) for k, t in sd.items()}
    folder = _legacy(tmp_path / "a", nan)
    with pytest.raises(ValueError, match=r"model\.safetensors: tensor 'W' holds NaN or inf"):
        toy.ToyModel.load(folder)

    def ints(sd):
        return {k: (t.long() if k == "W" else t) for k, t in sd.items()}
    folder = _legacy(tmp_path / "b", ints)
    with pytest.raises(ValueError, match=r"model\.safetensors: tensor 'W' holds torch\.int64 "
                                         r"values where the model has torch\.float32"):
        toy.ToyModel.load(folder)


@pytest.mark.parametrize("content, message", [
    (b"[5, 2]", r"config\.json is corrupt: it holds an array where an object is expected; "
                r"it should be a ToyConfig"),
    (b"\x00\x9f", r"config\.json is not valid JSON: it is not UTF-8 text"),
    (b"", r"config\.json is not valid JSON \(it is empty\)"),
    (b'{"n_features": 5, "n_hidden": NaN}', r"config\.json is not valid JSON: it holds NaN"),
    (b'{"n_features": 5, "n_hidden": 2, "colour": 1}',
     r"config\.json: ToyConfig does not take key\(s\) \['colour'\]"),
])
def test_a_broken_config_json_is_one_value_error_naming_it(tmp_path, content, message):
    folder = _toy().save(tmp_path / "m")
    (folder / "config.json").write_bytes(content)
    with pytest.raises(ValueError, match=message):
        toy.ToyModel.load(folder)


def test_saving_over_a_file_or_into_a_shared_folder(tmp_path, monkeypatch):
    (tmp_path / "f").write_text("x")
    with pytest.raises(ValueError, match=r"f is a file; a model is saved into a folder"):
        _toy().save(tmp_path / "f")
    assert (tmp_path / "f").read_text() == "x"
    shared = tmp_path / "shared"                     # a folder with other files: written in place
    shared.mkdir()
    (shared / "notes.txt").write_text("mine")
    model = _toy(1)
    model.save(shared)
    assert torch.equal(toy.ToyModel.load(shared).W, model.W)
    assert (shared / "notes.txt").read_text() == "mine"
    real = runs.write_json

    def fail_on_config(path, obj):
        if str(path).endswith("config.json"):
            raise OSError("disk full")
        return real(path, obj)
    with monkeypatch.context() as m:                 # interrupted after saved.json was written
        m.setattr(runs, "write_json", fail_on_config)
        with pytest.raises(OSError, match="disk full"):
            _toy(2).save(shared)
    assert sorted(p.name for p in shared.iterdir()) == ["config.json", "model.safetensors",
                                                        "notes.txt", "saved.json"]
    with pytest.raises(ValueError, match=r"does not match its SHA-256 in saved\.json.*a save "
                                         r"into this folder was interrupted"):
        toy.ToyModel.load(shared)


def test_gpt_save_and_load_go_through_the_same_checks(tmp_path):
    from superpose import gpt

    m = gpt.GPT(gpt.GPTConfig(d_vocab=11, n_layers=1, d_model=8, n_heads=2, n_ctx=8),
                device="cpu")
    folder = m.save(tmp_path / "g")
    torch.testing.assert_close(gpt.GPT.load(folder, device="cpu").W_E, m.W_E)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(ValueError, match=r"model\.safetensors is corrupt: it does not match"):
        gpt.GPT.load(folder)


# ---- tokenizer files ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bpe_spec():
    tok = tokenizers.BPETokenizer.train("hello world, hello there " * 20, 270)
    return {"type": "bpe", "format_version": 1, "tokenizer": json.loads(tok._tok.to_str())}


def _edit(spec, change):
    import copy

    spec = copy.deepcopy(spec)
    change(spec["tokenizer"]["model"])
    return spec


def _last(model):
    return max(model["vocab"], key=model["vocab"].get)


def _dup(model):
    model["vocab"][_last(model)] = 3


def _gap(model):
    model["vocab"][_last(model)] = 1000


def _no_byte(model):
    del model["vocab"]["!"]


def _foreign(model):
    model["vocab"]["\u4e2d"] = len(model["vocab"])


def _neg(model):
    model["vocab"][_last(model)] = -1


def _str_id(model):
    model["vocab"][_last(model)] = "7"


def _bad_merge(model):
    model["merges"].append(["zz", "qq"])


def _wordlevel(model):
    model.clear()
    model.update({"type": "WordLevel", "vocab": {"a": 0}, "unk_token": "a"})


@pytest.mark.parametrize("change, message", [
    (_dup, r"the BPE tokenizer is corrupt: its vocabulary's ids are not 0\.\.\d+, each once "
           r"\(ids held by more than one token: \{3: "),
    (_gap, r"the BPE tokenizer is corrupt: its vocabulary's ids are not .*ids missing: \[\d+\]; "
           r"ids beyond \d+: \[1000\]\)"),
    (_no_byte, r"the BPE tokenizer is corrupt: its vocabulary's ids are not"),
    (_foreign, r"token '\u4e2d' is neither a special token nor made of byte characters"),
    (_neg, r"the 'tokenizer' entry is not a valid HuggingFace tokenizer \(invalid value: "
           r"integer `-1`"),
    (_str_id, r"not a valid HuggingFace tokenizer \(invalid type: string"),
    (_bad_merge, r"not a valid HuggingFace tokenizer \(Token `zz` out of vocabulary"),
    (_wordlevel, r"the 'tokenizer' entry is not a valid HuggingFace tokenizer: it must hold "
                 r"a BPE model .*got 'WordLevel'"),
])
def test_an_edited_bpe_vocabulary_is_one_value_error_naming_the_file(tmp_path, bpe_spec,
                                                                      change, message):
    path = tmp_path / "tok.json"
    path.write_text(json.dumps(_edit(bpe_spec, change)))
    with pytest.raises(ValueError, match=r"tok\.json: .*" + message):
        tokenizers.load_tokenizer(path)


def test_a_bpe_vocabulary_missing_a_byte_but_numbered_right_is_refused(tmp_path, bpe_spec):
    def drop_byte_and_renumber(model):
        gone = model["vocab"].pop("!")
        model["vocab"] = {t: (i - 1 if i > gone else i) for t, i in model["vocab"].items()}
    path = tmp_path / "tok.json"
    path.write_text(json.dumps(_edit(bpe_spec, drop_byte_and_renumber)))
    with pytest.raises(ValueError, match=r"tok\.json: the BPE tokenizer is corrupt: its "
                                         r"vocabulary lacks 1 of the 256 byte tokens \(first "
                                         r"'!'\); text holding those bytes would be dropped"):
        tokenizers.load_tokenizer(path)


def test_a_good_bpe_file_still_round_trips(tmp_path, bpe_spec):
    path = tmp_path / "tok.json"
    path.write_text(json.dumps(bpe_spec))
    tok = tokenizers.load_tokenizer(path)
    assert tok.decode(tok.encode("hello \x00 ünïcode")) == "hello \x00 ünïcode"


@pytest.mark.parametrize("content, message", [
    (b'{"type": "byte", "format_version": true}', r"has format_version True"),
    (b'{"type": "byte", "format_version": 1.0}', r"has format_version 1\.0"),
    (b'{"type": ["char"], "format_version": 1}', r"tokenizer type must be one of"),
    (b'{"type": "char", "format_version": 1, "chars": ["a", 1]}',
     r"chars must be single characters, got 1; the file is corrupt or was edited"),
    (b'{"type": "char", "format_version": 1, "chars": []}',
     r"chars must hold at least one character"),
    (b'{"type": "char", "format_version": 1, "chars": "abc"}', r"key 'chars' must hold a list"),
    (b'{"type": "bpe", "format_version": 1, "tokenizer": []}',
     r"key 'tokenizer' must hold a dict"),
    (b'{"type": "bpe", "format_version": 1, "tokenizer": {}}',
     r"not a valid HuggingFace tokenizer: it must hold a BPE model"),
    (b'{"type": "char", "format_version": 1, "chars": ["a"]' + b"\x00" * 5,
     r"is not valid JSON"),
])
def test_other_broken_tokenizer_files(tmp_path, content, message):
    path = tmp_path / "tok.json"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=r"tok\.json.*" + message):
        tokenizers.load_tokenizer(path)


# ---- results folders ------------------------------------------------------------------------


@pytest.mark.parametrize("experiment, name", [
    ("../../x", None), ("exp", "../x"), ("a/b", None), ("exp", "a\\b"), ("", None),
    ("exp", ".."), ("exp", ""), ("exp", "a\0b"),
])
def test_run_names_that_escape_the_results_folder_are_refused(tmp_path, experiment, name):
    with pytest.raises(ValueError, match=r"must be a plain file or folder name"):
        runs.Run.create(experiment, out=tmp_path / "results", name=name)
    assert not (tmp_path / "results").exists() or not any((tmp_path / "results").rglob("*"))


def test_run_out_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(ValueError, match=r"out '.*f' is a file; pass a folder for the results"):
        runs.Run.create("exp", out=tmp_path / "f")


@pytest.mark.parametrize("name", ["../../x", "../x.png", "sub/x", "/abs", ".."])
def test_figure_and_model_names_that_escape_the_run_are_refused(tmp_path, name):
    import matplotlib.pyplot as plt

    run = runs.Run.create("exp", out=tmp_path)
    with pytest.raises(ValueError, match=r"name must be a plain file or folder name"):
        run.save_figure(plt.figure(), name)
    with pytest.raises(ValueError, match=r"name must be a plain file or folder name"):
        run.save_model(_toy(), name)
    plt.close("all")
    assert [p.name for p in tmp_path.iterdir()] == ["exp"]


def test_a_figure_that_fails_to_save_leaves_no_tmp_and_keeps_the_old_png(tmp_path):
    import matplotlib.pyplot as plt

    run = runs.Run.create("exp", out=tmp_path)
    fig = plt.figure()
    old = run.save_figure(fig, "loss").read_bytes()

    class Broken:
        def savefig(self, path, **kw):
            with open(path, "wb") as f:
                f.write(b"\x89PNG half")
            raise RuntimeError("renderer crashed")
    with pytest.raises(RuntimeError, match="renderer crashed"):
        run.save_figure(Broken(), "loss")
    with pytest.raises(RuntimeError, match="renderer crashed"):
        run.save_figure(Broken(), "new")
    plt.close(fig)
    assert sorted(p.name for p in run.path.iterdir()) == ["loss.png"]
    assert (run.path / "loss.png").read_bytes() == old


def test_run_status_complete_interrupted_and_changed(tmp_path):
    import matplotlib.pyplot as plt

    run = runs.Run.create("exp", out=tmp_path)
    run.save_config({"a": 1})
    run.save_figure(plt.figure(), "f")
    plt.close("all")
    run.save_model(_toy(), "model")
    run.save_metrics({"loss": 0.5})
    assert run.status == "interrupted"               # metrics.json alone is not "finished"
    (run.path / ".metrics.json.x.tmp").write_text("{")   # left by a killed write
    run.finish()
    assert not (run.path / ".metrics.json.x.tmp").exists()
    listed = runs.read_json(run.path / "complete.json")["files"]
    assert sorted(listed) == ["config.json", "f.png", "metrics.json", "model/config.json",
                              "model/model.safetensors", "model/saved.json"]
    assert run.status == "complete"
    (run.path / "metrics.json").write_text('{"loss": 0.1}')
    assert run.status == "changed"
    run.save_metrics({"loss": 0.5})
    assert run.status == "complete"                  # the same bytes again
    (run.path / "extra.png").write_bytes(b"x")
    assert run.status == "changed"
    (run.path / "extra.png").unlink()
    (run.path / "f.png").unlink()
    assert runs.run_status(run.path) == "changed"
    with pytest.raises(FileNotFoundError, match=r"is not a run folder"):
        runs.run_status(tmp_path / "nope")


@pytest.mark.parametrize("content, message", [
    (b"\xff", r"complete\.json is not valid JSON: it is not UTF-8"),
    (b"[]", r"complete\.json is corrupt: it holds an array where an object is expected; "
            r"it should be a completion marker"),
    (b'{"files": 3}', r"complete\.json is not a completion marker"),
    (b'{"files": {"../x": "00"}}', r"complete\.json names '\.\./x', which is outside the run"),
    (b'{"files": {"/etc/passwd": "00"}}', r"names '/etc/passwd', which is outside the run"),
])
def test_a_broken_completion_marker_is_one_value_error(tmp_path, content, message):
    run = runs.Run.create("exp", out=tmp_path)
    (run.path / "complete.json").write_bytes(content)
    with pytest.raises(ValueError, match=message):
        runs.run_status(run.path)


def test_experiment_main_finishes_only_runs_that_return(tmp_path):
    def work(*, out, quick, seed, progress):
        run = runs.Run.create("exp", out=out, name="ok")
        run.save_metrics({"summary": {"x": 1}})
        return {"summary": {"x": 1}}

    def dies(*, out, quick, seed, progress):
        runs.Run.create("exp", out=out, name="dead").save_metrics({"x": 1})
        raise RuntimeError("killed")

    runs.experiment_main(work, "t", ["--out", str(tmp_path), "--no-progress"])
    assert runs.run_status(tmp_path / "exp" / "ok") == "complete"
    with pytest.raises(RuntimeError, match="killed"):
        runs.experiment_main(dies, "t", ["--out", str(tmp_path)])
    assert runs.run_status(tmp_path / "exp" / "dead") == "interrupted"


def test_experiment_main_refuses_an_out_that_is_a_file_before_any_work(tmp_path, capsys):
    (tmp_path / "f").write_text("x")
    called = []
    with pytest.raises(SystemExit):
        runs.experiment_main(lambda **kw: called.append(kw), "t", ["--out", str(tmp_path / "f")])
    assert not called
    assert "is a file; pass a folder for the results" in capsys.readouterr().err
    assert os.path.getsize(tmp_path / "f") == 1


# ---- experiment scripts with their own command line ----------------------------------------


@pytest.mark.parametrize("script, argv, message", [
    ("gpt_train", ["--out", "{file}"], r"--out .*f is a file; pass a folder for the results"),
    ("gpt_train", ["--name", "../../x"], r"--name must be a plain file or folder name"),
    ("gpt_train", ["--name", "a/b"], r"--name must be a plain file or folder name"),
    ("tour", ["--out", "{file}"], r"--out .*f is a file; pass a folder for the results"),
])
def test_scripts_refuse_a_bad_out_or_name_before_any_work(tmp_path, capsys, script, argv,
                                                          message):
    import importlib
    import re

    (tmp_path / "f").write_text("x")
    module = importlib.import_module(script)
    argv = [a.replace("{file}", str(tmp_path / "f")) for a in argv]
    with pytest.raises(SystemExit):
        (module.parse_args if script == "gpt_train" else module.main)([*argv, "--quick"])
    assert re.search(message, capsys.readouterr().err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]


def test_gpt_train_run_refuses_a_file_out_or_an_escaping_name_before_loading(tmp_path):
    import gpt_train

    (tmp_path / "f").write_text("x")
    with pytest.raises(ValueError, match=r"out '.*f' is a file; pass a folder for the results"):
        gpt_train.run(out=tmp_path / "f", quick=True)
    with pytest.raises(ValueError, match=r"name must be a plain file or folder name"):
        gpt_train.run(out=tmp_path, quick=True, name="../x")


def test_writes_under_a_file_or_onto_a_folder_are_refused_naming_them(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(ValueError, match=r"cannot write .*f/sub/m\.json: .*f is a file, not a "
                                         r"folder"):
        runs.write_json(tmp_path / "f" / "sub" / "m.json", {"a": 1})
    with pytest.raises(ValueError, match=r"tok is a folder; pass the path of a file to write"):
        (tmp_path / "tok").mkdir()
        tokenizers.ByteTokenizer().save(tmp_path / "tok")
    with pytest.raises(ValueError, match=r"cannot write .*f/m: .*f is a file, not a folder"):
        _toy().save(tmp_path / "f" / "m")
    assert (tmp_path / "f").read_text() == "x"


@pytest.mark.parametrize("fig, dpi, message", [
    ("figure", float("inf"), r"dpi must be an integer in \[1, 1200\], got inf"),
    ("figure", 0, r"dpi must be an integer in \[1, 1200\], got 0"),
    ("figure", 10**6, r"dpi must be an integer in \[1, 1200\], got 1000000"),
    ("figure", True, r"dpi must be an integer in \[1, 1200\], got True"),
    (None, 100, r"fig must be a matplotlib Figure \(something with \.savefig\), got NoneType"),
    ([1, 2], 100, r"fig must be a matplotlib Figure .*got list"),
])
def test_save_figure_refuses_a_bad_dpi_or_a_non_figure(tmp_path, fig, dpi, message,
                                                      user_errors):
    import matplotlib.pyplot as plt

    run = runs.Run.create("exp", out=tmp_path)
    if fig == "figure":
        fig = plt.figure()
    with pytest.raises(ValueError, match=message):
        run.save_figure(fig, "x", dpi=dpi)
    plt.close("all")
    assert list(run.path.iterdir()) == []
