"""Synthetic chest CT "phantoms" written in the exact LUNA16 layout.

``make_phantoms(out, profile, seed)`` writes::

    out/subset0 .. subset{K-1}/<seriesuid>.mhd + .raw   int16 HU, labeled scans
    out/annotations.csv           nodules >= 3 mm (world mm)
    out/annotations_excluded.csv  nodules < 3 mm and calcified granulomas
    out/seriesuids.csv            the labeled uids, no header
    out/unlabeled/<seriesuid>.mhd + .raw   scans (with nodules) but no annotations
    out/nodule_kinds.csv          every annotation with its kind and location
    out/profile.yaml
    out/.focalmix-phantoms.json   the marker: profile and seed (read_phantom_marker)

The folder appears whole or not at all: it is generated in a hidden sibling folder
and renamed at the end. Only an empty folder or the kit's own phantoms (the marker)
are ever replaced. The same seed gives byte-identical files.
"""

from __future__ import annotations

import io
import json
import multiprocessing
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from focalmix_lib import atomic, config
from focalmix_lib.data.coordinates import ScanGeometry, voxel_to_world
from focalmix_lib.data.luna_csv import write_findings, write_seriesuids
from focalmix_lib.data.phantom_anatomy import ChestRecipe, render_chest
from focalmix_lib.data.scans import write_mhd
from focalmix_lib.errors import KitInputError

UID_PREFIX = "1.3.6.1.4.1.14519.5.2.1.6279.6001."
# Written last into every phantom folder: the profile and seed; make_phantoms replaces only folders holding it.
MARKER_NAME = ".focalmix-phantoms.json"
_IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
_Z_FLIP = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, -1.0)


_QUICK = dict(n_labeled=24, n_subsets=2, n_unlabeled=16, in_plane_size=112, in_plane_spacing_mm=(2.7, 2.9),
              slice_spacing_mm=(5.0, 5.0), scan_length_mm=(280.0, 300.0), nodules_per_scan=2.0,
              diameter_median_mm=9.0, diameter_log_sd=0.35, diameter_range_mm=(6.0, 20.0), spacing_mm=2.0)


@dataclass(frozen=True)
class PhantomProfile:
    """Size and content of a phantom set. Defaults are the ``standard`` preset.

    Nodule diameters follow a log-normal law (median ``diameter_median_mm``, log-sd
    ``diameter_log_sd``) truncated to ``diameter_range_mm``; counts per scan are
    Poisson. ``spacing_mm`` is the isotropic training spacing recommended for the set.
    """

    n_labeled: int = 160
    n_subsets: int = 10
    n_unlabeled: int = 400
    in_plane_size: int = 176
    in_plane_spacing_mm: tuple[float, float] = (1.8, 2.0)
    slice_spacing_mm: tuple[float, float] = (2.0, 2.5)
    scan_length_mm: tuple[float, float] = (240.0, 280.0)
    nodules_per_scan: float = 1.5
    diameter_median_mm: float = 6.5
    diameter_log_sd: float = 0.5
    diameter_range_mm: tuple[float, float] = (3.0, 30.0)
    small_findings_per_scan: float = 0.4
    calcified_per_scan: float = 0.2
    noise_hu: float = 25.0
    correlated_noise_hu: float = 15.0
    z_flipped_fraction: float = 0.1
    spacing_mm: float = 1.5

    PRESETS = {
        "quick": _QUICK,
        # The ``cpu`` reproduction profile: the quick phantoms with LUNA16-like thin slices and
        # nodules (1.5 a scan, 4-20 mm, smaller ones commoner), and enough scans for a label-budget
        # effect (60 training, 40 test scans). docs/reproduce.md says what each change did.
        "cpu": {**_QUICK, "n_labeled": 100, "n_subsets": 5, "n_unlabeled": 32, "slice_spacing_mm": (2.0, 2.5),
                "nodules_per_scan": 1.5, "diameter_median_mm": 8.0, "diameter_log_sd": 0.4,
                "diameter_range_mm": (4.0, 20.0)},
        "paper": dict(n_labeled=888, n_subsets=10, n_unlabeled=400, in_plane_size=512,
                      in_plane_spacing_mm=(0.65, 0.8), slice_spacing_mm=(1.25, 2.5), scan_length_mm=(280.0, 340.0),
                      nodules_per_scan=1.35, spacing_mm=1.0),
    }


def profile_from_name(name: str, **overrides: Any) -> PhantomProfile:
    """The preset ``quick``, ``cpu``, ``standard`` or ``paper``, with field overrides."""
    return config.from_preset(PhantomProfile, name, **overrides)


def make_uids(seed: int, count: int) -> list[str]:
    """``count`` distinct LUNA16-like series uids, drawn from ``seed``."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5E21E5]))
    uids: list[str] = []
    seen: set[str] = set()
    while len(uids) < count:
        digits = str(rng.integers(1, 10)) + "".join(str(d) for d in rng.integers(0, 10, size=29))
        if digits not in seen:
            seen.add(digits)
            uids.append(UID_PREFIX + digits)
    return uids


@dataclass(frozen=True)
class _ScanJob:
    index: int
    uid: str
    path: Path
    profile: PhantomProfile
    seed: int


def _scan_geometry(rng: np.random.Generator, profile: PhantomProfile) -> ScanGeometry:
    n = profile.in_plane_size
    pixel = rng.uniform(*profile.in_plane_spacing_mm)
    slice_mm = float(rng.choice(np.arange(profile.slice_spacing_mm[0], profile.slice_spacing_mm[1] + 1e-6, 0.25)))
    depth = int(round(rng.uniform(*profile.scan_length_mm) / slice_mm))
    # LUNA16-like origins: the in-plane field of view centred near x = y = 0, z around -300 mm.
    origin = (-n * pixel / 2 + rng.normal(0, 8), -n * pixel / 2 + rng.normal(0, 8), rng.uniform(-360.0, -240.0))
    spacing = (round(pixel, 6), round(pixel, 6), slice_mm)
    direction = _Z_FLIP if rng.random() < profile.z_flipped_fraction else _IDENTITY
    if direction == _Z_FLIP:
        origin = (origin[0], origin[1], origin[2] + (depth - 1) * slice_mm)
    return ScanGeometry((depth, n, n), tuple(round(v, 4) for v in origin), spacing, direction)  # type: ignore[arg-type]


def _diameters(rng: np.random.Generator, profile: PhantomProfile) -> tuple[float, ...]:
    count = rng.poisson(profile.nodules_per_scan)
    lo, hi = profile.diameter_range_mm
    out = []
    while len(out) < count:
        d = float(np.exp(rng.normal(np.log(profile.diameter_median_mm), profile.diameter_log_sd)))
        if lo <= d <= hi:
            out.append(round(d, 2))
    return tuple(out)


def generate_scan(job: _ScanJob) -> list[tuple[str, tuple[float, float, float], float, str, str]]:
    """Render and write one scan; return its findings (uid, world xyz, diameter, kind, location)."""
    rng = np.random.default_rng(np.random.SeedSequence([job.seed, job.index]))
    profile = job.profile
    geometry = _scan_geometry(rng, profile)
    recipe = ChestRecipe(
        shape_zyx=geometry.shape_zyx, spacing_zyx=geometry.spacing_zyx,
        nodule_diameters_mm=_diameters(rng, profile),
        small_finding_diameters_mm=tuple(round(float(d), 2) for d in rng.uniform(1.5, 2.9, rng.poisson(profile.small_findings_per_scan))),
        calcified_diameters_mm=tuple(round(float(d), 2) for d in rng.uniform(3.0, 6.0, rng.poisson(profile.calcified_per_scan))),
        noise_hu=profile.noise_hu, correlated_noise_hu=profile.correlated_noise_hu,
    )
    volume, findings = render_chest(recipe, rng)
    # The chest is drawn with its apex at the last array slice. A z-flipped scan stores its
    # slices head first, so its array is reversed: the apex stays at high world z (the head).
    flipped = geometry.direction == _Z_FLIP
    if flipped:
        volume = np.ascontiguousarray(volume[::-1])
    write_mhd(job.path, volume, geometry)
    last_slice_mm = (geometry.shape_zyx[0] - 1) * geometry.spacing_zyx[0]
    rows = []
    for f in findings:
        centre_mm = np.asarray(f.centre_mm, dtype=np.float64)
        if flipped:
            centre_mm[0] = last_slice_mm - centre_mm[0]
        world = voxel_to_world(centre_mm / np.asarray(geometry.spacing_zyx), geometry)
        rows.append((job.uid, tuple(float(v) for v in world), f.diameter_mm, f.kind, f.location))
    return rows  # type: ignore[return-value]


def make_phantoms(out_dir: str | Path, profile: PhantomProfile, seed: int, progress: bool = True, *,
                  force: bool = False, workers: int = 2) -> dict[str, Any]:
    """Write a phantom set in the LUNA16 layout to ``out_dir``; return a summary dict.

    ``out_dir`` must be absent or an empty folder; with ``force``, a folder of the kit's
    own phantoms (one holding the marker file ``.focalmix-phantoms.json``) is replaced
    too. Anything else (a file, a folder of other files, a place that cannot be written)
    raises KitInputError naming it before any scan is rendered: nothing that exists is
    removed or altered, and nothing is left behind.
    """
    from tqdm import tqdm

    out = Path(out_dir)
    _check_destination(out, force)
    start = time.perf_counter()
    work = _work_folder(out)
    try:
        new = work / "new"
        uids = make_uids(seed, profile.n_labeled + profile.n_unlabeled)
        subsets = np.array_split(np.arange(profile.n_labeled), profile.n_subsets)
        jobs = []
        for k, members in enumerate(subsets):
            for i in members:
                jobs.append(_ScanJob(int(i), uids[i], new / f"subset{k}" / f"{uids[i]}.mhd", profile, seed))
        for i in range(profile.n_labeled, profile.n_labeled + profile.n_unlabeled):
            jobs.append(_ScanJob(i, uids[i], new / "unlabeled" / f"{uids[i]}.mhd", profile, seed))
        for job in jobs:
            job.path.parent.mkdir(parents=True, exist_ok=True)
        results = _run_jobs(jobs, workers, progress, tqdm)
        labeled = [row for job, rows in zip(jobs, results) if job.index < profile.n_labeled for row in rows]
        _write_tables(new, uids[: profile.n_labeled], labeled)
        config.save_yaml(profile, new / "profile.yaml")
        atomic.write_json(new / MARKER_NAME, {"seed": seed, "profile": config.to_dict(profile)})
        _swap_in(new, out, work / "old")
        try:
            shutil.rmtree(work)
        except OSError as error:
            raise KitInputError(work, f"the new phantoms are in {out}, but the folder they replaced could not be "
                                      f"deleted ({error.strerror}); delete it") from None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    nodules = [r for r in labeled if r[2] >= 3.0 and r[3] != "calcified"]
    diam = [r[2] for r in nodules]
    return {
        "out_dir": str(out), "seed": seed, "labeled_scans": profile.n_labeled, "subsets": profile.n_subsets,
        "unlabeled_scans": profile.n_unlabeled, "nodules": len(nodules), "excluded": len(labeled) - len(nodules),
        "diameter_mm_min": min(diam, default=0.0), "diameter_mm_max": max(diam, default=0.0),
        "seconds": round(time.perf_counter() - start, 2),
    }


@dataclass(frozen=True)
class PhantomMarker:
    """What a phantom folder holds, as its marker file records it: the ``profile`` and the ``seed``."""

    profile: PhantomProfile
    seed: int

    @property
    def preset(self) -> str | None:
        """The preset (quick, standard, paper) the profile equals; None for a profile with overrides."""
        names = ("quick", "standard", "paper")
        return next((name for name in names if profile_from_name(name) == self.profile), None)

    def describe(self) -> str:
        """``quick phantoms (seed 0)``: for messages."""
        return f"{self.preset or 'custom'} phantoms (seed {self.seed})"


def read_phantom_marker(folder: str | Path) -> PhantomMarker | None:
    """The phantom set ``folder`` holds, from its marker file alone; None where there is no marker.

    A folder without the marker is not the kit's phantoms (real LUNA16, or any other
    data). A marker that cannot be read raises KitInputError naming it.
    """
    path = Path(folder) / MARKER_NAME
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        return PhantomMarker(config.replace_fields(PhantomProfile(), record["profile"]), int(record["seed"]))
    except (OSError, ValueError, KeyError, TypeError) as error:  # ConfigError is a ValueError
        raise KitInputError(path, f"not a phantom marker that this kit wrote ({error})") from None


def check_phantom_profile(folder: str | Path, expected: PhantomProfile) -> None:
    """Raise KitInputError where ``folder`` holds the kit's phantoms of another profile than ``expected``.

    Cheap (it reads the marker file only), so a reproduction can check its data before
    any work. A folder without the marker passes: it is not the kit's phantoms.
    """
    marker = read_phantom_marker(folder)
    if marker is None or marker.profile == expected:
        return
    differ = [f"{f.name} {getattr(marker.profile, f.name)!r} (this needs {getattr(expected, f.name)!r})"
              for f in fields(PhantomProfile) if getattr(marker.profile, f.name) != getattr(expected, f.name)]
    raise KitInputError(folder, f"holds {marker.describe()} with {', '.join(differ)}; "
                                "make phantoms of the profile needed in another folder")


def _check_destination(out: Path, force: bool) -> None:
    """Refuse (KitInputError) an ``out`` that make_phantoms must not or cannot replace."""
    if out.exists() and not out.is_dir():
        raise KitInputError(out, "exists and is not a folder; choose another output folder")
    if not out.is_dir():
        return
    if any(out.iterdir()):
        marker = read_phantom_marker(out)
        if marker is None:
            raise KitInputError(out, f"holds files that are not the kit's phantoms (no {MARKER_NAME}), so it is "
                                     "never replaced; delete it yourself or choose another output folder")
        if not force:
            raise KitInputError(out, f"holds {marker.describe()}; pass --force (force=True) to replace them")
    # Replacing renames ``out`` and deletes what it holds: every entry must be writable (not read-only, not immutable).
    for entry in (out, *out.rglob("*")):
        if not os.access(entry, os.W_OK, follow_symlinks=False):
            raise KitInputError(entry, "cannot be replaced: it is read-only or immutable")


def _work_folder(out: Path) -> Path:
    """A new hidden folder beside ``out`` that the set is generated in; KitInputError where none can be made."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    except OSError as error:
        raise KitInputError(out.parent, f"cannot write the output folder here ({error.strerror})") from None


def _swap_in(new: Path, out: Path, old: Path) -> None:
    """Put ``new`` in place of ``out`` (moved to ``old`` if it exists); on failure ``out`` is as it was."""
    try:
        if out.exists():
            os.replace(out, old)
        try:
            os.replace(new, out)
        except OSError:
            if old.exists():
                os.replace(old, out)
            raise
    except OSError as error:
        raise KitInputError(out, f"cannot be replaced ({error.strerror})") from None


def _run_jobs(jobs: list[_ScanJob], workers: int, progress: bool, tqdm: Any) -> list[list]:
    bar = tqdm(total=len(jobs), desc="phantom scans", unit="scan", disable=not progress)
    if workers <= 1 or len(jobs) < 2:
        results = []
        for job in jobs:
            results.append(generate_scan(job))
            bar.update()
    else:
        with multiprocessing.get_context("fork").Pool(min(workers, len(jobs))) as pool:
            results = []
            for rows in pool.imap(generate_scan, jobs, chunksize=1):
                results.append(rows)
                bar.update()
    bar.close()
    return results


def _write_tables(folder: Path, labeled_uids: list[str], rows: list) -> None:
    nodules = [r for r in rows if r[2] >= 3.0 and r[3] != "calcified"]
    excluded = [r for r in rows if not (r[2] >= 3.0 and r[3] != "calcified")]
    for name, table in (("annotations.csv", nodules), ("annotations_excluded.csv", excluded)):
        write_findings(folder / name, [r[0] for r in table], np.asarray([r[1] for r in table]).reshape(-1, 3),
                       np.asarray([r[2] for r in table], dtype=np.float64), "diameter_mm")
    write_seriesuids(folder / "seriesuids.csv", labeled_uids)
    buffer = io.StringIO()
    buffer.write("seriesuid,coordX,coordY,coordZ,diameter_mm,kind,location\n")
    for uid, (x, y, z), d, kind, location in nodules:
        buffer.write(f"{uid},{x:.4f},{y:.4f},{z:.4f},{d:.6g},{kind},{location}\n")
    atomic.write_text(folder / "nodule_kinds.csv", buffer.getvalue())
