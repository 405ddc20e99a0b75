"""Phantoms: LUNA16 layout, annotations on their nodules, determinism, atomic folder writes."""

import csv
import filecmp
from pathlib import Path

import numpy as np
import pytest

from focalmix_lib.cli import main
from focalmix_lib.data import phantoms
from focalmix_lib.data.coordinates import world_to_voxel
from focalmix_lib.data.dataset import Luna16Folder
from focalmix_lib.data.phantoms import make_phantoms, profile_from_name
from focalmix_lib.data.scans import read_scan
from focalmix_lib.errors import KitInputError

TINY = dict(n_labeled=2, n_subsets=1, n_unlabeled=1)


def test_layout(quick_phantoms):
    folder = Luna16Folder(quick_phantoms)
    assert len(folder.seriesuids) == 24 and len(folder.unlabeled_paths()) == 16
    assert sorted(p.name for p in quick_phantoms.glob("subset*")) == ["subset0", "subset1"]
    assert all(uid.startswith("1.3.6.1.4.1.14519.5.2.1.6279.6001.") for uid in folder.seriesuids)
    assert all(folder.scan_path(uid).with_suffix(".raw").is_file() for uid in folder.seriesuids)
    assert not (quick_phantoms / "seriesuids.csv").read_text(encoding="utf-8").startswith("seriesuid")
    d = folder.annotations.value
    assert len(d) > 20 and d.min() >= 6.0 and d.max() <= 20.0
    assert (folder.excluded.value < 3.0).any()
    with open(quick_phantoms / "nodule_kinds.csv") as f:
        kinds = list(csv.DictReader(f))
    assert len(kinds) == len(d)
    assert {k["kind"] for k in kinds} <= {"solid", "part-solid", "ground-glass"}
    assert {k["location"] for k in kinds} <= {"isolated", "juxta-vascular", "juxta-pleural"}
    assert len({k["location"] for k in kinds}) == 3
    assert profile_from_name("quick") == phantoms.config.load_yaml(phantoms.PhantomProfile, quick_phantoms / "profile.yaml")


def test_every_annotation_lands_on_its_nodule(quick_phantoms):
    folder = Luna16Folder(quick_phantoms)
    table = folder.annotations
    for uid in sorted(set(table.seriesuid)):
        scan = read_scan(folder.scan_path(uid))
        rows = table.for_series(uid)
        for world, diameter in zip(rows.world_xyz, rows.value):
            k, j, i = np.rint(world_to_voxel(world, scan.geometry)).astype(int)
            centre = np.median(scan.volume[k, j - 1:j + 2, i - 1:i + 2])
            # Lung around it: a shell well outside the nodule in the same slice.
            reach = int(np.ceil(diameter / scan.geometry.spacing_xyz[0])) + 3
            ring = scan.volume[k, max(j - reach, 0):j + reach + 1, max(i - reach, 0):i + reach + 1]
            lung = np.median(ring[ring < -500]) if (ring < -500).any() else -850
            # Ground glass is about -500 HU; lung about -850; noise about 30 HU.
            assert centre > lung + 150, (uid, world, centre, lung)


def test_same_seed_same_bytes_and_no_overwrite(tmp_path):
    profile = profile_from_name("quick", **TINY)
    make_phantoms(tmp_path / "a", profile, seed=3, progress=False, workers=1)
    make_phantoms(tmp_path / "b", profile, seed=3, progress=False, workers=2)
    compare = filecmp.dircmp(tmp_path / "a", tmp_path / "b")
    files = [p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file()]
    assert len(files) == 12  # five tables, the marker and three scans of two files
    assert all(filecmp.cmp(tmp_path / "a" / f, tmp_path / "b" / f, shallow=False) for f in files), compare.report()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]  # no partial folders left
    with pytest.raises(KitInputError, match="pass --force"):
        make_phantoms(tmp_path / "a", profile, seed=4, progress=False)
    assert main(["make-data", "--profile", "quick", "--out", str(tmp_path / "a"), "--quiet"]) == 2


def test_interrupted_run_leaves_nothing(tmp_path, monkeypatch):
    calls = []
    original = phantoms.generate_scan

    def fail_on_second(job):
        calls.append(job)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(job)

    monkeypatch.setattr(phantoms, "generate_scan", fail_on_second)
    with pytest.raises(KeyboardInterrupt):
        make_phantoms(tmp_path / "out", profile_from_name("quick", **TINY), seed=0, progress=False, workers=1)
    assert list(tmp_path.iterdir()) == []


def test_force_replaces_kit_phantoms_only(tmp_path):
    out = tmp_path / "out"
    make_phantoms(out, profile_from_name("quick", **TINY), seed=0, progress=False, workers=1)
    (out / "old.txt").write_text("old")
    make_phantoms(out, profile_from_name("quick", **TINY), seed=1, progress=False, force=True, workers=1)
    assert not (out / "old.txt").exists() and (out / "annotations.csv").is_file()
    assert phantoms.read_phantom_marker(out).seed == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_z_flipped_phantom_is_the_same_patient_stored_head_first(tmp_path: Path) -> None:
    """Stored in either slice order, a phantom has the same anatomy in world coordinates: the
    arrays are each other's reverse along z and every finding keeps its world position."""
    from focalmix_lib.data.luna_csv import read_annotations

    sets = {}
    for fraction in (0.0, 1.0):
        out = tmp_path / f"flipped{fraction}"
        make_phantoms(out, profile_from_name("quick", n_labeled=2, n_subsets=1, n_unlabeled=0,
                                             z_flipped_fraction=fraction), seed=3, progress=False, workers=1)
        sets[fraction] = out
    straight, flipped = (read_annotations(sets[f] / "annotations.csv") for f in (0.0, 1.0))
    assert len(straight) > 0
    np.testing.assert_allclose(flipped.world_xyz, straight.world_xyz, atol=1e-6)
    for mhd in sorted((sets[0.0] / "subset0").glob("*.mhd")):
        a, b = read_scan(mhd), read_scan(sets[1.0] / "subset0" / mhd.name)
        assert b.geometry.direction[8] == -1.0 and a.geometry.direction[8] == 1.0
        np.testing.assert_array_equal(b.volume[::-1], a.volume)
