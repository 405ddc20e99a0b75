"""Time the LUNA16 evaluation on a challenge-sized submission, and the reading of it.

888 scans x 100 marks (88,800 rows), 1,200 included nodules and 1,500 excluded
findings. First the submission CSV is read by the fast reader and by the row-by-row
reader it falls back to (timed in alternation, same file, same run: the ratio is the
figure to quote). Then the point estimate, and the point estimate plus 1,000 bootstrap
resamples, once with probabilities rounded to 4 decimals (many tied scores) and once
at full precision (every score distinct: the most curve vertices).
Run: ``PYTHONPATH=. python benchmarks/bench_evaluate.py``.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np

from focalmix_lib.data.luna_csv import PREDICTION_COLUMNS, FindingTable, read_table, write_findings
from focalmix_lib.evaluation.luna16 import evaluate_froc

N_SCANS, MARKS_PER_SCAN, N_NODULES, N_EXCLUDED = 888, 100, 1200, 1500


def synthetic_challenge(
    seed: int = 0, decimals: int | None = 4,
) -> tuple[FindingTable, FindingTable, list[str], FindingTable]:
    """Annotations, excluded findings, listed scans and a submission where ~90 % of nodules are found."""
    rng = np.random.default_rng(seed)
    uids = np.asarray([f"1.3.6.1.4.1.14519.5.2.1.6279.6001.{i:012d}" for i in range(N_SCANS)])

    def table(name: str, scan: np.ndarray, xyz: np.ndarray, value: np.ndarray) -> FindingTable:
        return FindingTable(Path(name), uids[scan], xyz, value, np.arange(2, len(scan) + 2))

    nodule_scan = rng.integers(0, N_SCANS, N_NODULES)
    nodule_xyz = rng.uniform(-150, 150, (N_NODULES, 3))
    excluded_scan = rng.integers(0, N_SCANS, N_EXCLUDED)
    excluded_xyz = rng.uniform(-150, 150, (N_EXCLUDED, 3))
    excluded_diameter = np.where(rng.random(N_EXCLUDED) < 0.3, -1.0, rng.uniform(2, 10, N_EXCLUDED))
    mark_scan = np.repeat(np.arange(N_SCANS), MARKS_PER_SCAN)
    mark_xyz = rng.uniform(-150, 150, (len(mark_scan), 3))
    mark_prob = rng.beta(0.5, 4.0, len(mark_scan))
    # Put marks on most nodules (in their scan's own rows), with higher scores.
    found = np.flatnonzero(rng.random(N_NODULES) < 0.9)
    slot = nodule_scan[found] * MARKS_PER_SCAN + rng.integers(0, MARKS_PER_SCAN, len(found))
    mark_xyz[slot] = nodule_xyz[found] + rng.normal(0, 1.0, (len(found), 3))
    mark_prob[slot] = rng.beta(4.0, 1.0, len(found))
    if decimals is not None:
        mark_prob = mark_prob.round(decimals)
    return (
        table("annotations.csv", nodule_scan, nodule_xyz, rng.uniform(3, 30, N_NODULES)),
        table("annotations_excluded.csv", excluded_scan, excluded_xyz, excluded_diameter),
        list(uids),
        table("predictions.csv", mark_scan, mark_xyz, mark_prob),
    )


def load() -> str:
    return "load average {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def time_reader(predictions: FindingTable, repeats: int = 5) -> None:
    """Best of ``repeats`` for the fast reader and the row reader, alternated on one written submission.

    Wall-clock seconds, and the process's CPU seconds, which a loaded machine inflates less.
    """
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "predictions.csv"
        write_findings(path, predictions.seriesuid, predictions.world_xyz, predictions.value, "probability")
        wall = {False: float("inf"), True: float("inf")}
        cpu = dict(wall)
        for _ in range(repeats):
            for row_by_row in (False, True):
                start, start_cpu = time.perf_counter(), time.process_time()
                read_table(path, PREDICTION_COLUMNS, allow_empty=True, row_by_row=row_by_row)
                wall[row_by_row] = min(wall[row_by_row], time.perf_counter() - start)
                cpu[row_by_row] = min(cpu[row_by_row], time.process_time() - start_cpu)
        print(f"read a {len(predictions)}-row submission ({path.stat().st_size / 2**20:.1f} MB), best of {repeats} "
              f"({load()}):")
        for label, best in (("wall", wall), ("CPU", cpu)):
            print(f"  {label:>4}: fast {best[False]:.3f} s, row by row {best[True]:.3f} s, "
                  f"row by row / fast = {best[True] / best[False]:.1f}x")


def main() -> None:
    time_reader(synthetic_challenge(decimals=None)[3])
    for decimals in (4, None):
        annotations, excluded, uids, predictions = synthetic_challenge(decimals=decimals)
        print(f"{len(uids)} scans, {len(predictions)} marks, {len(annotations)} nodules, {len(excluded)} excluded, "
              f"probabilities {'rounded to 4 decimals' if decimals else 'at full precision'}")
        evaluate_froc(annotations, excluded, uids, predictions)  # warm-up (imports, caches)
        for bootstrap in (0, 1000):
            times = []
            for _ in range(3):
                start = time.perf_counter()
                result = evaluate_froc(annotations, excluded, uids, predictions, bootstrap=bootstrap, seed=0)
                times.append(time.perf_counter() - start)
            line = f"  bootstrap={bootstrap:4d}: best {min(times):.3f} s of 3 (CPM {result.cpm:.4f}"
            if result.bootstrap is not None:
                line += f", 95 % interval {result.bootstrap.cpm.low:.4f}-{result.bootstrap.cpm.high:.4f}"
            print(line + f"; {load()})")


if __name__ == "__main__":
    main()
