"""check-data: a valid folder passes; each bad input is named (file and row) with exit status 2."""

import os
import shutil

import numpy as np
import pytest

from focalmix_lib.cli import main
from focalmix_lib.data.phantoms import make_phantoms, profile_from_name
from focalmix_lib.data.validate import check_luna16_folder

HEADER = "seriesuid,coordX,coordY,coordZ,diameter_mm\n"


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny") / "set"
    make_phantoms(out, profile_from_name("quick", n_labeled=3, n_subsets=1, n_unlabeled=1, nodules_per_scan=3.0),
                  seed=1, progress=False, workers=1)
    return out


@pytest.fixture
def folder(tiny_set, tmp_path):
    copy = tmp_path / "set"
    shutil.copytree(tiny_set, copy)
    return copy


def _uids(folder):
    return (folder / "seriesuids.csv").read_text(encoding="utf-8").split()


def _check_fails(folder, capsys, *words):
    assert main(["check-data", str(folder)]) == 2
    err = capsys.readouterr().err
    for word in words:
        assert word in err, err
    return err


def test_valid_folder_summary(quick_phantoms, capsys):
    assert main(["check-data", str(quick_phantoms)]) == 0
    out = capsys.readouterr().out
    assert "labeled scans         24" in out and "unlabeled scans       16" in out and "OK" in out
    report = check_luna16_folder(quick_phantoms)
    assert report.ok and report.summary["nodules"] > 20 and report.summary["disk_mb"] > 1


def test_scan_without_nodules_is_valid(folder):
    (folder / "annotations.csv").write_text(HEADER)
    assert check_luna16_folder(folder).ok


def test_missing_and_truncated_raw(folder, capsys):
    uids = _uids(folder)
    (folder / "subset0" / f"{uids[0]}.raw").unlink()
    raw = folder / "subset0" / f"{uids[1]}.raw"
    os.truncate(raw, 100)
    err = _check_fails(folder, capsys, f"{uids[0]}.raw: data file named by", f"{uids[1]}.raw: truncated")
    assert err.count("problem") == 1 and "2 problem(s)" in err


def test_dimsize_mismatch(folder, capsys):
    mhd = folder / "subset0" / f"{_uids(folder)[2]}.mhd"
    mhd.write_text(mhd.read_text(encoding="utf-8").replace("DimSize = 112 112", "DimSize = 112 111"))
    _check_fails(folder, capsys, f"{mhd.name[:-4]}.raw", "DimSize")


def test_uid_listed_without_scan(folder, capsys):
    uid = _uids(folder)[0]
    (folder / "subset0" / f"{uid}.mhd").unlink()
    _check_fails(folder, capsys, f"no scan subset*/{uid}.mhd")


def test_annotation_uid_without_scan(folder, capsys):
    with open(folder / "annotations.csv", "a") as f:
        f.write("1.2.3.4,0,0,-200,6\n")
    rows = len((folder / "annotations.csv").read_text(encoding="utf-8").splitlines())
    _check_fails(folder, capsys, f"annotations.csv, row {rows}", "series 1.2.3.4 has no scan")


def test_annotation_outside_its_scan(folder, capsys):
    uid = _uids(folder)[0]
    with open(folder / "annotations.csv", "a") as f:
        f.write(f"{uid},0,0,500,6\n")
    rows = len((folder / "annotations.csv").read_text(encoding="utf-8").splitlines())
    _check_fails(folder, capsys, f"annotations.csv, row {rows}", "outside its scan")


@pytest.mark.parametrize("line, words", [
    ("{uid},abc,0,-200,6\n", "coordX is not a number"),
    ("{uid},0,nan,-200,6\n", "coordY is not finite"),
    ("{uid},0,0,-200,0\n", "diameter_mm must be positive"),
    ("{uid},0,0,-200,-3\n", "diameter_mm must be positive"),
])
def test_bad_annotation_values(folder, capsys, line, words):
    text = (folder / "annotations.csv").read_text(encoding="utf-8")
    (folder / "annotations.csv").write_text(text + line.format(uid=_uids(folder)[0]))
    _check_fails(folder, capsys, f"annotations.csv, row {len(text.splitlines()) + 1}", words)


def test_missing_column(folder, capsys):
    path = folder / "annotations_excluded.csv"
    path.write_text("seriesuid,coordX,coordY,diameter_mm\n")
    _check_fails(folder, capsys, "annotations_excluded.csv, row 1", "missing column")


def test_missing_folder(tmp_path, capsys):
    _check_fails(tmp_path / "nowhere", capsys, "data folder not found")
    assert not np.any([p.exists() for p in tmp_path.iterdir()])
