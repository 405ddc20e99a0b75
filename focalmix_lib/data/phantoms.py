"""Synthetic chest CT "phantoms" written in the exact LUNA16 layout.

``make_phantoms(out, profile, seed)`` writes::

    out/subset0 .. subset{K-1}/<seriesuid>.mhd + .raw   int16 HU, labeled scans
    out/annotations.csv           nodules >= 3 mm (world mm)
    out/annotations_excluded.csv  nodules < 3 mm and calcified granulomas
    out/seriesuids.csv            the labeled uids, no header
    out/unlabeled/<seriesuid>.mhd + .raw   scans (with nodules) but no annotations
    out/nodule_kinds.csv          every annotation with its kind and location
    out/profile.yaml

The folder appears whole or not at all: it is generated in a hidden sibling folder
and renamed at the end. The same seed gives byte-identical files.
"""

from __future__ import annotations

import io
import multiprocessing
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from focalmix_lib import atomic, config
from focalmix_lib.data.coordinates import ScanGeometry, voxel_to_world
from focalmix_lib.data.luna_csv import write_findings, write_seriesuids
from focalmix_lib.data.phantom_anatomy import ChestRecipe, render_chest
from focalmix_lib.data.scans import write_mhd

UID_PREFIX = "1.3.6.1.4.1.14519.5.2.1.6279.6001."
_IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
_Z_FLIP = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, -1.0)


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
        "quick": dict(n_labeled=24, n_subsets=2, n_unlabeled=16, in_plane_size=112,
                      in_plane_spacing_mm=(2.7, 2.9), slice_spacing_mm=(5.0, 5.0), scan_length_mm=(280.0, 300.0),
                      nodules_per_scan=2.0, diameter_median_mm=9.0, diameter_log_sd=0.35,
                      diameter_range_mm=(6.0, 20.0), spacing_mm=2.0),
        "paper": dict(n_labeled=888, n_subsets=10, n_unlabeled=400, in_plane_size=512,
                      in_plane_spacing_mm=(0.65, 0.8), slice_spacing_mm=(1.25, 2.5), scan_length_mm=(280.0, 340.0),
                      nodules_per_scan=1.35, spacing_mm=1.0),
    }


def profile_from_name(name: str, **overrides: Any) -> PhantomProfile:
    """The preset ``quick``, ``standard`` or ``paper``, with field overrides."""
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
    write_mhd(job.path, volume, geometry)
    rows = []
    for f in findings:
        world = voxel_to_world(np.asarray(f.centre_mm) / np.asarray(geometry.spacing_zyx), geometry)
        rows.append((job.uid, tuple(float(v) for v in world), f.diameter_mm, f.kind, f.location))
    return rows  # type: ignore[return-value]


def make_phantoms(out_dir: str | Path, profile: PhantomProfile, seed: int, progress: bool = True, *,
                  force: bool = False, workers: int = 2) -> dict[str, Any]:
    """Write a phantom set in the LUNA16 layout to ``out_dir``; return a summary dict.

    Refuses (FileExistsError) to replace a non-empty folder unless ``force``.
    """
    from tqdm import tqdm

    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not force:
        raise FileExistsError(f"{out} exists and is not empty; pass --force (force=True) to replace it")
    start = time.perf_counter()
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        uids = make_uids(seed, profile.n_labeled + profile.n_unlabeled)
        subsets = np.array_split(np.arange(profile.n_labeled), profile.n_subsets)
        jobs = []
        for k, members in enumerate(subsets):
            for i in members:
                jobs.append(_ScanJob(int(i), uids[i], tmp / f"subset{k}" / f"{uids[i]}.mhd", profile, seed))
        for i in range(profile.n_labeled, profile.n_labeled + profile.n_unlabeled):
            jobs.append(_ScanJob(i, uids[i], tmp / "unlabeled" / f"{uids[i]}.mhd", profile, seed))
        for job in jobs:
            job.path.parent.mkdir(parents=True, exist_ok=True)
        results = _run_jobs(jobs, workers, progress, tqdm)
        labeled = [row for job, rows in zip(jobs, results) if job.index < profile.n_labeled for row in rows]
        _write_tables(tmp, uids[: profile.n_labeled], labeled)
        config.save_yaml(profile, tmp / "profile.yaml")
        if out.exists():
            trash = out.parent / f".{out.name}.old-{os.getpid()}"
            os.replace(out, trash)
            os.replace(tmp, out)
            shutil.rmtree(trash)
        else:
            os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    nodules = [r for r in labeled if r[2] >= 3.0 and r[3] != "calcified"]
    diam = [r[2] for r in nodules]
    return {
        "out_dir": str(out), "seed": seed, "labeled_scans": profile.n_labeled, "subsets": profile.n_subsets,
        "unlabeled_scans": profile.n_unlabeled, "nodules": len(nodules), "excluded": len(labeled) - len(nodules),
        "diameter_mm_min": min(diam, default=0.0), "diameter_mm_max": max(diam, default=0.0),
        "seconds": round(time.perf_counter() - start, 2),
    }


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
