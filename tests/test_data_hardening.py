"""Every bad data file answered in one line: the fast submission reader, CSV encodings, scan
headers that point elsewhere, what training needs, read-only data and the phantom writer."""

import dataclasses
import errno
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest

from focalmix_lib.cli import main
from focalmix_lib.data import dataset, luna_csv, phantoms
from focalmix_lib.data.coordinates import ScanGeometry
from focalmix_lib.data.dataset import Luna16Folder, preprocessed_cache_dir
from focalmix_lib.data.phantoms import check_phantom_profile, make_phantoms, profile_from_name, read_phantom_marker
from focalmix_lib.data.scans import read_scan, write_mhd
from focalmix_lib.data.validate import check_luna16_folder, check_training_scans
from focalmix_lib.errors import KitInputError

HEADER = "seriesuid,coordX,coordY,coordZ,probability"
TINY = {"n_labeled": 2, "n_subsets": 1, "n_unlabeled": 1, "in_plane_size": 64, "scan_length_mm": (100.0, 110.0)}


def _snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (hidden ones too) with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _one_line_error(capsys, *words: str) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    for word in words:
        assert word in err, err
    return err


def _assert_same_table(a: luna_csv.FindingTable, b: luna_csv.FindingTable) -> None:
    assert a.path == b.path
    for name in ("seriesuid", "world_xyz", "value", "rows"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and x.shape == y.shape and np.array_equal(x, y), name


def _read_both(path: Path) -> tuple[luna_csv.FindingTable, luna_csv.FindingTable]:
    fast = luna_csv.read_table(path, luna_csv.PREDICTION_COLUMNS, allow_empty=True)
    rows = luna_csv.read_table(path, luna_csv.PREDICTION_COLUMNS, allow_empty=True, row_by_row=True)
    return fast, rows


def _submission(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    uids = [f"1.3.6.1.4.1.14519.5.2.1.6279.6001.{i:012d}" for i in rng.integers(0, 50, n)]
    xyz = rng.uniform(-150, 150, (n, 3))
    prob = rng.random(n)
    return [f"{u},{x!r},{y!r},{z!r},{p!r}" for u, (x, y, z), p in zip(uids, xyz.tolist(), prob.tolist())]


# --- the fast submission reader ---------------------------------------------------------------

def test_fast_reader_equals_row_reader_on_a_messy_file(tmp_path, monkeypatch):
    lines = _submission(3000)
    lines[10] = '"' + lines[10].replace(",", '","') + '"'  # every field quoted
    lines[11] = '"{}",{}'.format(*lines[11].split(",", 1))  # a quoted uid
    lines[12] = lines[12].replace(",", " , ")  # spaces around fields
    lines[13] = lines[12]  # a duplicate row: kept, as the official evaluation keeps them
    lines[40:40] = ["", "   ", "\t"]  # blank lines: skipped, their line numbers still count
    text = "\r\n".join([HEADER, *lines]) + "\r\n"
    path = tmp_path / "predictions.csv"
    path.write_bytes(text.encode())
    rows = luna_csv.read_table(path, luna_csv.PREDICTION_COLUMNS, allow_empty=True, row_by_row=True)
    # The fast path alone reads this file: the row reader is not consulted.
    monkeypatch.setattr(luna_csv, "_row_table", lambda *a, **k: pytest.fail("fell back to the row reader"))
    fast = luna_csv.read_predictions(path)
    _assert_same_table(fast, rows)
    assert len(fast) == 3000 and fast.rows[0] == 2 and fast.rows[-1] == 3000 + 4
    assert fast.seriesuid[11] == lines[11].split(",")[0].strip('"') and fast.rows[40] == 45  # after 3 blank lines
    np.testing.assert_array_equal(fast.world_xyz[13], fast.world_xyz[12])


@pytest.mark.parametrize("body", [
    '"1.2,3",4,5,6,0.5\n',  # a comma inside quotes: the row reader's job
    '"1.2\n3",1,2,3,0.5\n',  # a line break inside quotes
    "1.2.3,1,2,3,0.5\n,,,,\n4.5.6,1,2,3,0.25\n",  # a line of empty fields
    "1.2.3,1,2,3,0.5,extra\n",  # more fields than the header
    "1.2.3,1_000,2,3,0.5\n",  # digits grouped, which Python's float() reads
    "1.2.3,1,2,3,0.5\n\u00e91,1,2,3,0.5\n",  # non-ASCII text
])
def test_fast_and_row_readers_agree_on_unusual_files(tmp_path, body):
    path = tmp_path / "predictions.csv"
    path.write_text(HEADER + "\n" + body, encoding="utf-8")
    _assert_same_table(*_read_both(path))


@pytest.mark.parametrize("bad, words", [
    ("{uid},1,abc,3,0.5", "coordY is not a number: 'abc'"),
    ("{uid},1,2,3,inf", "probability is not finite"),
    (" ,1,2,3,0.5", "empty seriesuid"),
    ("{uid},1,2", "expected 5 fields, got 3"),
    ("{uid},1,2,3\r0.5", "not a well-formed CSV line"),
])
def test_a_bad_row_deep_in_a_large_file_is_named(tmp_path, capsys, bad, words):
    lines = _submission(88_800)
    uid = lines[0].split(",")[0]
    lines[70_000] = bad.format(uid=uid)
    path = tmp_path / "predictions.csv"
    path.write_text("\n".join([HEADER, *lines]) + "\n", encoding="utf-8")
    for row_by_row in (False, True):
        with pytest.raises(KitInputError) as info:
            luna_csv.read_table(path, luna_csv.PREDICTION_COLUMNS, allow_empty=True, row_by_row=row_by_row)
        assert info.value.path == path and info.value.row == 70_002 and words in str(info.value)


# --- CSV encodings ----------------------------------------------------------------------------

def test_utf8_byte_order_mark_is_accepted(tmp_path):
    lines = _submission(5)
    (tmp_path / "a.csv").write_text(HEADER + "\n" + "\n".join(lines) + "\n", encoding="utf-8")
    (tmp_path / "b.csv").write_text(HEADER + "\n" + "\n".join(lines) + "\n", encoding="utf-8-sig")
    a, b = luna_csv.read_predictions(tmp_path / "a.csv"), luna_csv.read_predictions(tmp_path / "b.csv")
    _assert_same_table(a, dataclasses.replace(b, path=a.path))
    (tmp_path / "seriesuids.csv").write_text("1.2.3\n4.5.6\n", encoding="utf-8-sig")
    assert luna_csv.read_seriesuids(tmp_path / "seriesuids.csv") == ["1.2.3", "4.5.6"]


@pytest.mark.parametrize("data, row, words", [
    ((HEADER + "\n1.2.3,1,2,3,0.5\n").encode("utf-16"), 1, "UTF-16"),
    ((HEADER + "\n1.2.3,1,2,3,0.5\n").encode("utf-16-le"), 1, "NUL bytes"),
    ((HEADER + "\n1.2.3,1,2,3,0.5\n1.2.\u00e9,1,2,3,0.5\n").encode("latin-1"), 3, "byte 0xe9"),
])
def test_text_that_is_not_utf8_is_named_with_its_row(tmp_path, data, row, words):
    path = tmp_path / "predictions.csv"
    path.write_bytes(data)
    with pytest.raises(KitInputError) as info:
        luna_csv.read_predictions(path)
    assert info.value.path == path and info.value.row == row
    assert words in str(info.value) and "save it as UTF-8" in str(info.value)


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory):
    out = tmp_path_factory.mktemp("hardening") / "set"
    make_phantoms(out, profile_from_name("quick", **TINY, nodules_per_scan=3.0), seed=2, progress=False, workers=1)
    return out


@pytest.fixture
def folder(tiny_set, tmp_path):
    copy = tmp_path / "set"
    shutil.copytree(tiny_set, copy)
    return copy


def _uids(folder: Path) -> list[str]:
    return luna_csv.read_seriesuids(folder / "seriesuids.csv")


def test_check_data_with_bom_and_with_utf16(folder, capsys):
    listed = folder / "seriesuids.csv"
    listed.write_bytes(listed.read_text(encoding="utf-8").encode("utf-8-sig"))
    assert main(["check-data", str(folder)]) == 0
    assert "OK" in capsys.readouterr().out
    listed.write_bytes(listed.read_text(encoding="utf-8-sig").encode("utf-16"))
    assert main(["check-data", str(folder)]) == 2
    err = capsys.readouterr().err
    assert f"{listed}, row 1: not UTF-8 text (it is UTF-16); save it as UTF-8" in err and "Traceback" not in err


# --- scan headers -----------------------------------------------------------------------------

def _small_scan(folder: Path) -> tuple[Path, np.ndarray]:
    volume = np.arange(60, dtype=np.int16).reshape(3, 4, 5)
    path = folder / "a.mhd"
    write_mhd(path, volume, ScanGeometry((3, 4, 5), (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), (1, 0, 0, 0, 1, 0, 0, 0, 1)))
    return path, volume


@pytest.mark.parametrize("name", ["../../outside.raw", "{abs}", "..\\..\\outside.raw"])
def test_element_data_file_outside_the_folder_is_refused(tmp_path, name):
    scans = tmp_path / "data" / "subset0"
    scans.mkdir(parents=True)
    path, _ = _small_scan(scans)
    outside = tmp_path / "outside.raw"
    shutil.copy(path.with_suffix(".raw"), outside)
    name = name.format(abs=outside)
    path.write_text(path.read_text().replace("ElementDataFile = a.raw", f"ElementDataFile = {name}"))
    with pytest.raises(KitInputError) as info:
        read_scan(path)
    assert info.value.path == path and "ElementDataFile" in str(info.value) and "outside" in str(info.value)


def test_element_data_file_outside_fails_check_data(folder, capsys):
    mhd = folder / "subset0" / f"{_uids(folder)[0]}.mhd"
    shutil.copy(mhd.with_suffix(".raw"), folder.parent / "elsewhere.raw")
    header = mhd.read_text().replace(f"ElementDataFile = {mhd.stem}.raw", "ElementDataFile = ../../elsewhere.raw")
    mhd.write_text(header)
    assert main(["check-data", str(folder)]) == 2
    assert f"{mhd}: ElementDataFile '../../elsewhere.raw' points outside" in capsys.readouterr().err


def test_local_data_must_follow_the_header(tmp_path):
    path, volume = _small_scan(tmp_path)
    header = path.read_text().replace("ElementDataFile = a.raw", "ElementDataFile = LOCAL")
    path.with_suffix(".raw").unlink()
    path.write_bytes(header.encode() + volume.tobytes())
    np.testing.assert_array_equal(read_scan(path).volume, volume)
    path.write_bytes(header.encode())  # the header alone
    with pytest.raises(KitInputError) as info:
        read_scan(path)
    assert info.value.path == path and "ElementDataFile = LOCAL, but 0 bytes follow the header" in str(info.value)


def test_local_header_without_data_fails_check_data(folder, capsys):
    mhd = folder / "subset0" / f"{_uids(folder)[1]}.mhd"
    mhd.write_text(mhd.read_text().replace(f"ElementDataFile = {mhd.stem}.raw", "ElementDataFile = LOCAL"))
    assert main(["check-data", str(folder)]) == 2
    assert f"{mhd}: ElementDataFile = LOCAL, but 0 bytes follow the header" in capsys.readouterr().err


# --- what training needs ----------------------------------------------------------------------

def test_training_check_passes_a_good_folder(folder):
    check_training_scans(Luna16Folder(folder), _uids(folder))


@pytest.mark.parametrize("bad, row, words", [
    (None, None, "no annotated nodules"),
    ("9.9.9,0,0,-200,6", 3, "series 9.9.9 has no scan"),
    ("{uid},100000,0,-200,6", 3, "lies outside its scan"),
])
def test_training_check_names_the_row(folder, bad, row, words):
    annotations = folder / "annotations.csv"
    header, first = annotations.read_text(encoding="utf-8").splitlines()[:2]
    lines = [header] if bad is None else [header, first, bad.format(uid=first.split(",")[0])]
    annotations.write_text("\n".join(lines) + "\n", encoding="utf-8")
    before = _snapshot(folder)
    with pytest.raises(KitInputError) as info:
        check_training_scans(Luna16Folder(folder), _uids(folder))
    assert info.value.path == annotations and info.value.row == row and words in str(info.value)
    assert _snapshot(folder) == before


def test_training_check_agrees_with_check_data(folder):
    uid = _uids(folder)[0]
    with open(folder / "annotations.csv", "a", encoding="utf-8") as f:
        f.write(f"{uid},0,0,100000,6\n")
    with pytest.raises(KitInputError) as info:
        check_training_scans(Luna16Folder(folder), _uids(folder))
    assert str(info.value) in check_luna16_folder(folder).problems


# --- the preprocessed-scan cache --------------------------------------------------------------

def _deny_writes(monkeypatch, *denied: Path) -> None:
    """os.access answers "not writable" under ``denied``, as for read-only data even as root."""
    real = os.access

    def access(path, mode, **kwargs):
        if mode & os.W_OK and any(Path(path).resolve().is_relative_to(d.resolve()) for d in denied):
            return False
        return real(path, mode, **kwargs)

    monkeypatch.setattr(os, "access", access)


def test_cache_dir_in_the_data_folder_when_writable(tmp_path):
    assert preprocessed_cache_dir(tmp_path) == tmp_path / ".cache" and (tmp_path / ".cache").is_dir()
    requested = tmp_path / "elsewhere" / "cache"
    assert preprocessed_cache_dir(tmp_path, requested) == requested and requested.is_dir()


def test_cache_dir_of_read_only_data_is_per_user(tmp_path, monkeypatch, capsys):
    data = tmp_path / "LUNA16"
    data.mkdir()
    (data / "annotations.csv").write_text("keep")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "user-cache"))
    if os.geteuid() != 0:  # root writes through chmod: only a monkeypatched os.access stands for it there
        data.chmod(0o555)
        try:
            first = preprocessed_cache_dir(data)
        finally:
            data.chmod(0o755)
        capsys.readouterr()
        dataset._FALLBACKS_ANNOUNCED.clear()
    _deny_writes(monkeypatch, data)
    cache = preprocessed_cache_dir(data)
    assert cache.parent == tmp_path / "user-cache" / "focalmix-kit" and cache.is_dir()
    assert not (data / ".cache").exists() and _snapshot(data) == {"annotations.csv": b"keep"}
    _one_line_error(capsys, f"{data / '.cache'} cannot be written", str(cache))
    assert preprocessed_cache_dir(data) == cache  # the same folder again, without a second warning
    assert capsys.readouterr().err == ""
    if os.geteuid() != 0:
        assert first == cache


def test_unwritable_requested_cache_dir_is_named(tmp_path, monkeypatch):
    requested = tmp_path / "cache"
    requested.mkdir()  # a read-only folder
    _deny_writes(monkeypatch, requested)
    with pytest.raises(KitInputError) as info:
        preprocessed_cache_dir(tmp_path, requested)
    assert info.value.path == requested and "cache_dir cannot be created or written" in str(info.value)


# --- the phantom writer -----------------------------------------------------------------------

def _make_data(out: Path, *extra: str) -> int:
    return main(["make-data", "--profile", "quick", "--out", str(out), "--quiet", "--workers", "1", *extra])


def test_force_never_replaces_a_folder_of_other_files(tmp_path, capsys):
    out = tmp_path / "data" / "quick"
    out.mkdir(parents=True)
    (out / "notes.txt").write_text("keep")
    assert _make_data(out, "--force") == 2
    _one_line_error(capsys, f"focalmix make-data: error: {out}: holds files that are not the kit's phantoms")
    assert _snapshot(tmp_path) == {"data/quick/notes.txt": b"keep"}
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["quick"]


def test_a_file_as_out_is_refused(tmp_path, capsys):
    out = tmp_path / "quick"
    out.write_text("keep")
    assert _make_data(out, "--force") == 2
    _one_line_error(capsys, f"{out}: exists and is not a folder")
    assert _snapshot(tmp_path) == {"quick": b"keep"}


def test_an_unwritable_place_is_refused_before_any_work(tmp_path, capsys, monkeypatch):
    parent = tmp_path / "read-only"
    parent.mkdir()

    def read_only_file_system(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(tempfile, "mkdtemp", read_only_file_system)
    monkeypatch.setattr(phantoms, "generate_scan", lambda job: pytest.fail("rendered a scan"))
    assert _make_data(parent / "quick") == 2
    _one_line_error(capsys, f"{parent}: cannot write the output folder here (Read-only file system)")
    assert list(tmp_path.rglob("*")) == [parent]


def test_an_immutable_phantom_folder_is_left_as_it_is(folder, capsys, monkeypatch):
    before = _snapshot(folder)
    locked = folder / "subset0"
    _deny_writes(monkeypatch, locked)
    monkeypatch.setattr(phantoms, "generate_scan", lambda job: pytest.fail("rendered a scan"))
    assert _make_data(folder, "--force") == 2
    _one_line_error(capsys, str(locked), "cannot be replaced: it is read-only or immutable")
    assert _snapshot(folder) == before and sorted(p.name for p in folder.parent.iterdir()) == ["set"]


def test_phantoms_without_force_are_kept(folder, capsys):
    before = _snapshot(folder)
    assert _make_data(folder) == 2
    _one_line_error(capsys, f"{folder}: holds custom phantoms (seed 2); pass --force")
    assert _snapshot(folder) == before


def test_marker_names_the_profile(quick_phantoms, tiny_set, tmp_path):
    marker = read_phantom_marker(quick_phantoms)
    assert marker.preset == "quick" and marker.seed == 0 and marker.profile == profile_from_name("quick")
    assert read_phantom_marker(tmp_path) is None
    check_phantom_profile(quick_phantoms, profile_from_name("quick"))
    check_phantom_profile(tmp_path, profile_from_name("quick", n_subsets=8))  # not phantoms: nothing to check
    with pytest.raises(KitInputError) as info:
        check_phantom_profile(quick_phantoms, profile_from_name("quick", n_subsets=8))
    assert info.value.path == quick_phantoms
    assert "holds quick phantoms (seed 0) with n_subsets 2 (this needs 8)" in str(info.value)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / phantoms.MARKER_NAME).write_text("{}")
    with pytest.raises(KitInputError, match="not a phantom marker"):
        read_phantom_marker(broken)
