"""``focalmix detect``: a run's test scans, other subsets, a user's own scans (NIfTI, DICOM series), and one
line with exit status 2, before any work, for every bad run folder or path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from focalmix_lib.cli import main
from focalmix_lib.config import from_preset, save_yaml
from focalmix_lib.data.luna_csv import read_predictions
from focalmix_lib.data.scans import read_scan
from focalmix_lib.training.config import TrainConfig
from focalmix_lib.training.detector import build_model
from focalmix_lib.training.run_folder import RunFolder


def _make_run(folder: Path, data_dir: Path, status: str | None = "completed", message: str = "",
              model_preset: str = "quick") -> RunFolder:
    """A run folder as training leaves it: config.yaml, one checkpoint of an untrained quick detector, status.

    ``score_threshold=0`` makes the untrained detector mark every scan (its scores sit near the 0.01 prior).
    """
    cfg = from_preset(TrainConfig, "quick", data_dir=str(data_dir), score_threshold=0.0, max_detections=5,
                      test_scans=1)
    run = RunFolder(folder)
    folder.mkdir(parents=True)
    save_yaml(cfg, run.config_path)
    run.save_checkpoint(1, {"model": build_model(from_preset(TrainConfig, model_preset)).state_dict()})
    if status is not None:
        run.set_status(status, message)
    return run


def _fails_in_one_line(argv: list[str], capsys: pytest.CaptureFixture[str], *expected: str) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("focalmix detect: error: ") and "Traceback" not in err
    for text in expected:
        assert text in err, err
    return err


def test_detect_writes_the_submission_of_the_run_test_scans(tiny_phantoms: Path, tmp_path: Path) -> None:
    run = _make_run(tmp_path / "run", tiny_phantoms)
    assert main(["detect", "--run", str(run.path)]) == 0
    predictions = read_predictions(run.predictions_path)
    assert len(set(predictions.seriesuid)) == 1 and 1 <= len(predictions) <= 5


@pytest.mark.parametrize("status,message", [("diverged", "non-finite loss at step 12"), ("failed", "out of memory"),
                                            ("running", ""), (None, "")])
def test_detect_refuses_a_run_that_did_not_complete(tiny_phantoms: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str], status, message) -> None:
    run = _make_run(tmp_path / "run", tiny_phantoms, status, message)
    _fails_in_one_line(["detect", "--run", str(run.path), "--evaluate"], capsys, str(run.path),
                       f"the run is {status or 'not started'}", message, "--allow-incomplete")
    assert not run.predictions_path.exists() and not run.froc_path.exists()
    assert main(["detect", "--run", str(run.path), "--allow-incomplete"]) == 0
    assert run.predictions_path.is_file()


def test_bad_run_folders_fail_in_one_line_naming_the_file(tiny_phantoms: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "missing"
    _fails_in_one_line(["detect", "--run", str(missing)], capsys, f"{missing}: run folder not found")

    empty = tmp_path / "empty"
    empty.mkdir()
    _fails_in_one_line(["detect", "--run", str(empty)], capsys, str(empty / "config.yaml"), "no config.yaml")

    broken = _make_run(tmp_path / "broken", tiny_phantoms)
    broken.config_path.write_text("steps: [1\n", encoding="utf-8")
    _fails_in_one_line(["detect", "--run", str(broken.path)], capsys, str(broken.config_path), "not valid YAML")

    no_checkpoint = _make_run(tmp_path / "no_checkpoint", tiny_phantoms)
    for _, path in no_checkpoint.checkpoints():
        path.unlink()
    _fails_in_one_line(["detect", "--run", str(no_checkpoint.path)], capsys, f"{no_checkpoint.checkpoint_dir}: ")

    other_model = _make_run(tmp_path / "other_model", tiny_phantoms, model_preset="standard")
    _fails_in_one_line(["detect", "--run", str(other_model.path)], capsys, str(other_model.checkpoint_dir),
                       "'quick' detector")
    for run in (broken, no_checkpoint, other_model):
        assert not run.predictions_path.exists()


def _write_dicom_series(image, folder: Path) -> None:
    """One CT slice a file, with the tags a DICOM series reader sorts and places slices by."""
    import SimpleITK as sitk

    folder.mkdir()
    series_uid = "1.2.826.0.1.3680043.2.1125.1"
    direction = image.GetDirection()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(image.GetDepth()):
        slice_k = image[:, :, k]
        position = image.TransformIndexToPhysicalPoint((0, 0, k))
        tags = {
            "0008|0060": "CT", "0020|000d": series_uid + ".0", "0020|000e": series_uid,
            "0008|0018": f"{series_uid}.{k + 1}", "0020|0013": str(k + 1),
            "0020|0032": "\\".join(f"{v:.6f}" for v in position),
            "0020|0037": "\\".join(f"{v:.6f}" for v in (*direction[0:7:3], *direction[1:8:3])),
            "0018|0050": f"{image.GetSpacing()[2]:.6f}",
        }
        for tag, value in tags.items():
            slice_k.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"slice{k:04d}.dcm"))
        writer.Execute(slice_k)


def _by_uid(path: Path) -> dict[str, np.ndarray]:
    table = read_predictions(path)
    rows = {}
    for uid in set(table.seriesuid.tolist()):
        keep = table.seriesuid == uid
        rows[uid] = np.column_stack([table.world_xyz[keep], table.value[keep]])
    return rows


def test_detect_on_own_scans_nifti_and_dicom_gives_the_marks_of_the_mhd(tiny_phantoms: Path, tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    import SimpleITK as sitk

    run = _make_run(tmp_path / "run", tiny_phantoms)
    mhd = min(tiny_phantoms.glob("subset0/*.mhd"))
    image = sitk.ReadImage(str(mhd))
    own = tmp_path / "own"
    own.mkdir()
    sitk.WriteImage(image, str(own / "patient_a.nii.gz"))
    _write_dicom_series(image, own / "patient_b")
    assert read_scan(own / "patient_b").geometry.shape_zyx == read_scan(mhd).geometry.shape_zyx

    out = tmp_path / "out" / "own.csv"
    assert main(["detect", "--run", str(run.path), "--scans", str(mhd), str(own / "patient_a.nii.gz"),
                 str(own / "patient_b"), "--out", str(out), "--evaluate"]) == 0
    rows = _by_uid(out)
    assert set(rows) == {mhd.stem, "patient_a", "patient_b"}
    # The same voxels in three formats: the same marks, in the same world coordinates.
    for uid in ("patient_a", "patient_b"):
        assert rows[uid].shape == rows[mhd.stem].shape
        assert np.allclose(rows[uid], rows[mhd.stem], atol=1e-3)
    assert (out.parent / "froc.json").is_file()  # the .mhd is annotated in the run's data folder
    assert "CPM" in capsys.readouterr().out

    # A folder of scans is every scan in it; without annotations of them, nothing is evaluated.
    folder_out = tmp_path / "folder.csv"
    assert main(["detect", "--run", str(run.path), "--scans", str(own), "--out", str(folder_out), "--evaluate"]) == 0
    assert set(_by_uid(folder_out)) == {"patient_a"}  # the .nii.gz file; patient_b/ is a subfolder
    assert "not evaluated" in capsys.readouterr().err
    assert not (tmp_path / "froc.json").exists()


def test_detect_on_chosen_subsets_of_the_data_folder(tiny_phantoms: Path, tmp_path: Path) -> None:
    run = _make_run(tmp_path / "run", tiny_phantoms)
    out = tmp_path / "subset0.csv"
    assert main(["detect", "--run", str(run.path), "--subsets", "0", "--out", str(out)]) == 0
    assert set(_by_uid(out)) == {p.stem for p in tiny_phantoms.glob("subset0/*.mhd")}


def test_bad_scan_paths_fail_in_one_line_before_any_work(tiny_phantoms: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    run = _make_run(tmp_path / "run", tiny_phantoms)
    out = tmp_path / "out.csv"
    base = ["detect", "--run", str(run.path), "--out", str(out)]
    _fails_in_one_line(["detect", "--run", str(run.path), "--scans", str(tiny_phantoms)], capsys, "needs --out")
    _fails_in_one_line([*base, "--scans", str(tmp_path / "nowhere.nii")], capsys, "nowhere.nii: not found")
    text = tmp_path / "notes.txt"
    text.write_text("not a scan\n", encoding="utf-8")
    _fails_in_one_line([*base, "--scans", str(text)], capsys, "notes.txt: not a scan")
    (tmp_path / "empty").mkdir()
    _fails_in_one_line([*base, "--scans", str(tmp_path / "empty")], capsys, "empty: no scans here")
    truncated = tmp_path / "truncated"
    truncated.mkdir()
    mhd = min(tiny_phantoms.glob("subset0/*.mhd"))
    (truncated / mhd.name).write_bytes(mhd.read_bytes())
    raw = mhd.with_suffix(".raw")
    (truncated / raw.name).write_bytes(raw.read_bytes()[:1000])
    _fails_in_one_line([*base, "--scans", str(truncated)], capsys, mhd.name)
    _fails_in_one_line([*base, "--subsets", "7"], capsys, "no scans subset*/*.mhd in the subsets [7]")
    _fails_in_one_line([*base, "--subsets", "one"], capsys, "--subsets takes 'all' or numbers")
    assert not out.exists()
