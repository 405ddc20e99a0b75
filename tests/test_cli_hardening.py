"""Bad input to the focalmix command: one line naming the field or file, exit status 2, nothing touched.

Also the run folder's defences (damaged checkpoints, foreign pickles, leftovers of
killed writes) and the mode of atomically written files.
"""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from focalmix_lib import atomic
from focalmix_lib.cli import main
from focalmix_lib.config import from_preset, parse_overrides, save_yaml
from focalmix_lib.errors import KitInputError
from focalmix_lib.ssl.transforms import GROUP
from focalmix_lib.training.config import VIEW_COUNT, TrainConfig
from focalmix_lib.training.run_folder import DamagedCheckpointWarning, RunFolder

# (--set value, what the one-line message must contain): issue 14's list and more.
BAD_OVERRIDES = [
    ("gama=2", "gama=2: TrainConfig has no such field; did you mean gamma?"),
    ("steps=abc", "steps=abc: takes an integer"),
    ("steps=-1", "steps=-1: must be at least 1"),
    ("steps=0", "steps=0: must be at least 1"),
    ("steps=1.5", "steps=1.5: takes an integer"),
    ("lr=.nan", "lr=nan: takes a finite number"),
    ("lr=nan", "lr=nan: takes a number"),
    ("lr=0", "lr=0.0: must be greater than 0"),
    ("eta=0", "eta=0.0: must be greater than 0"),
    ("augmentations=0", "augmentations=0: must lie in [1, 16]"),
    ("augmentations=17", "augmentations=17: must lie in [1, 16]"),
    ("patch_size=30", "patch_size=30: must be a multiple of 8"),
    ("batch_labeled=0", "batch_labeled=0: must be at least 1"),
    ("checkpoint_every=0", "checkpoint_every=0: must be at least 1"),
    ("spacing_mm=0", "spacing_mm=0.0: must be greater than 0"),
    ("method=foo", "method=foo: must be one of supervised, focalmix"),
    ("temperature=0", "temperature=0.0: must be greater than 0"),
    ("model_preset=huge", "model_preset=huge: must be one of standard, quick, paper"),
    ("window_overlap=1", "window_overlap=1.0: must lie in [0, 1)"),
    ("alpha1=1.5", "alpha1=1.5: must lie in [0, 1]"),
    ("test_subsets=[12]", "test_subsets=[12]: item 12: must be one of 0, 1"),
    ("test_subsets=[]", "test_subsets=[]: must list at least one value"),
    ("test_subsets=[1,", "test_subsets=[1,: not a YAML value"),
    ("lung_margin_mm=-2", "lung_margin_mm=-2.0: must be -1 (keep all) or at least 0"),
    ("soft_alpha=maybe", "soft_alpha=maybe: takes true or false"),
    ("device=gpu", "device=gpu: must be auto, cpu, mps, cuda or cuda:N"),
    ("seed=-3", "seed=-3: must be at least 0"),
    ("unlabeled=0", "unlabeled=0: focalmix needs at least 1 unlabeled scan"),
    ("data_dir=", "data_dir=: must be a folder"),
    ("gamma", "--set=gamma: an override takes the form field=value"),
]


@pytest.fixture
def out_with_a_file(tmp_path: Path) -> Iterator[Path]:
    """An output folder that already holds a file; the test checks it is left exactly as it was."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("precious\n", encoding="utf-8")
    yield out
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    assert (out / "keep.txt").read_text(encoding="utf-8") == "precious\n"


def _one_line_error(capsys: pytest.CaptureFixture[str], command: str) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    assert err.startswith(f"focalmix {command}: error: "), err
    return err.removeprefix(f"focalmix {command}: error: ")


@pytest.mark.parametrize(("override", "message"), BAD_OVERRIDES)
def test_train_refuses_a_bad_set_value_in_one_line(override: str, message: str, out_with_a_file: Path,
                                                   tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    method = ["--method", "focalmix"] if override.startswith("unlabeled") else []
    code = main(["train", "--data", str(tmp_path / "no-data-needed"), "--out", str(out_with_a_file), *method,
                 "--set", override])
    assert code == 2
    assert _one_line_error(capsys, "train").startswith(message)


def test_train_refuses_a_device_this_machine_lacks(out_with_a_file: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    from_preset(TrainConfig, "quick", device="cuda:0")  # there is one
    code = main(["train", "--data", str(tmp_path), "--out", str(out_with_a_file), "--set", "device=cuda:1"])
    assert code == 2
    message = _one_line_error(capsys, "train")
    assert message == "device=cuda:1: this machine has 1 CUDA device(s); use device=auto or cpu"
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["train", "--data", str(tmp_path), "--out", str(out_with_a_file), "--set", "device=cuda"]) == 2
    assert _one_line_error(capsys, "train") == "device=cuda: this machine has no CUDA; use device=auto or cpu"


def test_overrides_read_numbers_the_yaml_1_2_way() -> None:
    values = parse_overrides(["lr=1e-4", "weight_decay=5E-5", "gamma=+2", "grad_clip=1.", "data_dir=1e-4x"])
    assert values == {"lr": 1e-4, "weight_decay": 5e-5, "gamma": 2, "grad_clip": 1.0, "data_dir": "1e-4x"}
    cfg = from_preset(TrainConfig, "quick", **values)
    assert cfg.lr == 1e-4 and isinstance(cfg.lr, float)


def test_every_train_field_has_a_range_check() -> None:
    from dataclasses import fields

    assert {f.name for f in fields(TrainConfig)} == set(TrainConfig.CHECKS)
    assert VIEW_COUNT == len(GROUP)


def test_a_bad_config_yaml_names_the_file_and_the_field(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = RunFolder(tmp_path / "run")
    save_yaml(from_preset(TrainConfig, "quick"), run.config_path)
    text = run.config_path.read_text(encoding="utf-8").replace("steps: 600", "steps: 0")
    run.config_path.write_text(text, encoding="utf-8")
    before = sorted(p.name for p in run.path.iterdir())
    assert main(["detect", "--run", str(run.path)]) == 2
    assert _one_line_error(capsys, "detect") == f"{run.config_path}, field steps: must be at least 1"
    assert sorted(p.name for p in run.path.iterdir()) == before


# --- checkpoints ------------------------------------------------------------------
def _state(step: int) -> dict[str, object]:
    return {"step": step, "model": {"weight": torch.full((2000,), float(step))}}


def test_a_truncated_newest_checkpoint_falls_back_to_the_newest_intact_one(tmp_path: Path) -> None:
    run = RunFolder(tmp_path)
    run.save_checkpoint(1, _state(1))
    newest = run.save_checkpoint(2, _state(2))
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])
    with pytest.warns(DamagedCheckpointWarning, match=str(newest)):
        assert [step for step, _ in run.checkpoints()] == [1]
    with pytest.warns(DamagedCheckpointWarning):
        assert run.load_checkpoint()["step"] == 1
    assert newest.exists()  # kept for inspection until the run writes a newer checkpoint


def test_a_damaged_byte_fails_the_crc_and_an_empty_file_is_skipped(tmp_path: Path) -> None:
    run = RunFolder(tmp_path)
    run.save_checkpoint(1, _state(1))
    damaged = run.save_checkpoint(2, _state(2))
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2] ^= 0xFF  # inside the tensor data: torch.load alone would not notice
    damaged.write_bytes(bytes(data))
    (run.checkpoint_dir / "step_0000003.pt").write_bytes(b"")
    with pytest.warns(DamagedCheckpointWarning) as caught:
        assert run.load_checkpoint()["step"] == 1
    assert {Path(str(w.message).split(": ")[0]).name for w in caught} == {"step_0000002.pt", "step_0000003.pt"}
    with pytest.warns(DamagedCheckpointWarning):
        run.save_checkpoint(4, _state(4))  # a new checkpoint retires the damaged ones
    assert sorted(p.name for p in run.checkpoint_dir.iterdir()) == ["step_0000001.pt", "step_0000004.pt"]


class _Payload:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.getcwd, ())


def test_a_foreign_pickle_is_refused_naming_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = RunFolder(tmp_path / "run")
    save_yaml(from_preset(TrainConfig, "quick"), run.config_path)
    run.checkpoint_dir.mkdir()
    crafted = run.checkpoint_dir / "step_0000001.pt"
    torch.save({"model": _Payload()}, crafted)
    run.set_status("completed")
    with pytest.raises(KitInputError) as caught:
        run.load_checkpoint()
    assert caught.value.path == crafted and "weights_only" not in str(caught.value)
    assert main(["detect", "--run", str(run.path)]) == 2
    message = _one_line_error(capsys, "detect")
    assert message.startswith(f"{crafted}: refused: it holds Python objects") and "weights_only" not in message
    assert crafted.exists() and not run.predictions_path.exists()


def test_leftovers_of_killed_writes_go_when_a_run_starts(tmp_path: Path) -> None:
    run = RunFolder(tmp_path)
    run.save_checkpoint(1, _state(1))
    leftovers = [run.checkpoint_dir / ".step_0000002.0123abcd.tmp.pt", tmp_path / ".status.89abcdef.tmp",
                 tmp_path / ".metrics.00ff00ff.tmp.jsonl"]
    for path in leftovers:
        path.write_bytes(b"")
    others = [tmp_path / ".hidden", tmp_path / "notes.tmp", run.checkpoint_dir / "step_0000001.pt"]
    others[0].write_text("mine", encoding="utf-8")
    others[1].write_text("mine", encoding="utf-8")
    run.set_status("completed")
    assert all(p.exists() for p in leftovers)  # only a starting run owns the folder
    run.set_status("running")
    assert not any(p.exists() for p in leftovers) and all(p.exists() for p in others)


# --- atomic writes ----------------------------------------------------------------
@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_atomic_writes_get_the_mode_open_would_give(umask: int, mode: int, tmp_path: Path) -> None:
    previous = os.umask(umask)
    try:
        atomic.write_text(tmp_path / "a.txt", "x")
        with atomic.atomic_path(tmp_path / "b.pt") as tmp:
            torch.save({"x": 1}, tmp)
        with open(tmp_path / "plain.txt", "w", encoding="utf-8") as handle:
            handle.write("x")
    finally:
        os.umask(previous)
    for name in ("a.txt", "b.pt", "plain.txt"):
        assert (tmp_path / name).stat().st_mode & 0o777 == mode


def test_an_atomic_rewrite_keeps_the_files_mode(tmp_path: Path) -> None:
    path = tmp_path / "shared.json"
    atomic.write_json(path, {"a": 1})
    path.chmod(0o640)
    atomic.write_json(path, {"a": 2})
    assert path.stat().st_mode & 0o777 == 0o640 and path.read_text(encoding="utf-8").count("2") == 1


# --- evaluate's output folder -------------------------------------------------------
def _evaluate(out: Path, tmp_path: Path) -> int:
    missing = tmp_path / "not-read-yet.csv"  # the output folder is checked before any input is read
    return main(["evaluate", "--annotations", str(missing), "--excluded", str(missing), "--seriesuids",
                 str(missing), "--predictions", str(missing), "--out", str(out)])


def test_evaluate_refuses_a_file_as_out(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "froc.json"
    out.write_text("{}", encoding="utf-8")
    assert _evaluate(out, tmp_path) == 2
    assert _one_line_error(capsys, "evaluate") == f"{out}: exists and is not a folder"
    assert out.read_text(encoding="utf-8") == "{}"
    assert _evaluate(out / "sub", tmp_path) == 2
    assert _one_line_error(capsys, "evaluate") == f"{out / 'sub'}: cannot be made: {out} is not a folder"


def test_evaluate_refuses_an_unwritable_folder(out_with_a_file: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    def read_only(*args: object, **kwargs: object) -> str:
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(tempfile, "mkdtemp", read_only)  # as a read-only mount (or chattr +i) answers
    assert _evaluate(out_with_a_file, tmp_path) == 2
    assert _one_line_error(capsys, "evaluate") == f"{out_with_a_file}: cannot write here: Read-only file system"
    assert _evaluate(out_with_a_file / "new" / "deeper", tmp_path) == 2
    assert _one_line_error(capsys, "evaluate") == (f"{out_with_a_file / 'new' / 'deeper'}: cannot write here "
                                                   f"(nor can it be made in {out_with_a_file}): Read-only file system")


# --- reproduce's arguments and --version -----------------------------------------------
@pytest.mark.parametrize(("only", "named"), [(",", "an empty entry"), ("table3a,", "an empty entry"),
                                             ("table3a,foo", "'foo'"), ("", "an empty entry")])
def test_reproduce_refuses_bad_only_while_parsing(only: str, named: str, out_with_a_file: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["reproduce", "--out", str(out_with_a_file), "--only", only])
    assert caught.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith(f"focalmix reproduce: error: argument --only: {named} in {only!r}: choose from table1,")


def test_reproduce_refuses_seeds_below_one(out_with_a_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["reproduce", "--out", str(out_with_a_file), "--seeds", "0"])
    assert caught.value.code == 2
    assert capsys.readouterr().err.strip().endswith("argument --seeds: must be at least 1, got 0")


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    import focalmix_lib

    with pytest.raises(SystemExit) as caught:
        main(["--version"])
    assert caught.value.code == 0 and capsys.readouterr().out.strip() == f"focalmix {focalmix_lib.__version__}"
