"""Data benchmarks (a script, not a test): phantom generation per profile; load + resample of a paper-sized scan.

    python benchmarks/bench_data.py [--sample-scans 3] [--workers 2]

quick is generated in full. standard and paper are timed on a few scans and
extrapolated to the profile's scan count, divided by the number of workers.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from focalmix_lib.data.dataset import load_preprocessed
from focalmix_lib.data.phantoms import _ScanJob, generate_scan, make_phantoms, profile_from_name
from focalmix_lib.data.scans import read_scan, resample_isotropic, write_mhd
from focalmix_lib.data.phantom_anatomy import ChestRecipe, render_chest
from focalmix_lib.data.coordinates import ScanGeometry


def bench_generation(name: str, tmp: Path, sample_scans: int, workers: int) -> None:
    profile = profile_from_name(name)
    total = profile.n_labeled + profile.n_unlabeled
    if name == "quick":
        start = time.perf_counter()
        make_phantoms(tmp / name, profile, seed=0, progress=False, workers=workers)
        seconds = time.perf_counter() - start
        size = sum(p.stat().st_size for p in (tmp / name).rglob("*") if p.is_file()) / 2**20
        print(f"{name:9s} {total:5d} scans  generated in full: {seconds:7.1f} s  ({size:.0f} MB)")
        return
    times, sizes = [], []
    for i in range(sample_scans):
        job = _ScanJob(i, f"bench{i}", tmp / name / f"bench{i}.mhd", profile, 0)
        job.path.parent.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        generate_scan(job)
        times.append(time.perf_counter() - start)
        sizes.append(job.path.with_suffix(".raw").stat().st_size / 2**20)
    per_scan = float(np.mean(times))
    print(f"{name:9s} {total:5d} scans  {per_scan:6.2f} s/scan ({sample_scans} timed, {np.mean(sizes):.0f} MB each) "
          f"-> about {per_scan * total / workers / 60:6.1f} min on {workers} workers, {np.mean(sizes) * total / 1024:.1f} GB")


def bench_paper_scan_load(tmp: Path) -> None:
    geometry = ScanGeometry((300, 512, 512), (-180.0, -180.0, -350.0), (0.7, 0.7, 1.25))
    volume, _ = render_chest(ChestRecipe(geometry.shape_zyx, geometry.spacing_zyx, (8.0,)), np.random.default_rng(0))
    path = tmp / "paper_scan.mhd"
    write_mhd(path, volume, geometry)
    start = time.perf_counter()
    scan = read_scan(path)
    read_s = time.perf_counter() - start
    start = time.perf_counter()
    resampled, target = resample_isotropic(scan.volume, scan.geometry, 1.0)
    resample_s = time.perf_counter() - start
    start = time.perf_counter()
    load_preprocessed(path, 1.0, None, tmp / "cache")
    full_s = time.perf_counter() - start
    start = time.perf_counter()
    load_preprocessed(path, 1.0, None, tmp / "cache")
    cached_s = time.perf_counter() - start
    print(f"paper-sized scan 512x512x300 (0.7 x 0.7 x 1.25 mm) -> 1.0 mm {target.shape_zyx}: read {read_s:.2f} s, "
          f"resample {resample_s:.2f} s, load_preprocessed (read + resample + lung mask + cache write) {full_s:.2f} s, "
          f"from cache {cached_s:.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sample-scans", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        for name in ("quick", "standard", "paper"):
            bench_generation(name, tmp, args.sample_scans, args.workers)
        bench_paper_scan_load(tmp)


if __name__ == "__main__":
    main()
