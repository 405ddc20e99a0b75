"""Which scans a run trains on, which it tests on, and its unlabeled pool.

Test scans are whole LUNA16 subsets (``subsetN`` folders), as in the challenge's
cross-validation. The labeled scans are drawn from the other subsets by a fixed
``split_seed``, so that runs with different seeds (and different methods) see the
same labeled scans, and a smaller labeled set is contained in every larger one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from focalmix_lib.data.dataset import Luna16Folder
from focalmix_lib.errors import KitInputError

_SUBSET = re.compile(r"^subset(\d+)$")


@dataclass(frozen=True)
class ScanSplit:
    labeled: tuple[str, ...]  # series uids with annotations used for training
    test: tuple[str, ...]  # series uids for detection and FROC
    unlabeled: tuple[Path, ...]  # scan files of the unlabeled pool


def subset_index(scan_path: Path) -> int:
    """The N of the ``subsetN`` folder that holds a scan."""
    match = _SUBSET.match(scan_path.parent.name)
    if match is None:
        raise KitInputError(scan_path, "scan is not inside a subsetN folder (LUNA16 layout)")
    return int(match.group(1))


def split_scans(
    folder: Luna16Folder, test_subsets: tuple[int, ...], labeled: int, unlabeled: int, split_seed: int
) -> ScanSplit:
    """Split the listed scans into labeled training scans, test scans and an unlabeled pool.

    ``labeled=0`` takes every training scan; ``unlabeled`` takes the first scans of
    a seeded permutation of the unlabeled pool (0 = none).
    """
    test, train = [], []
    for uid in folder.seriesuids:
        (test if subset_index(folder.scan_path(uid)) in test_subsets else train).append(uid)
    if not test:
        raise KitInputError(folder.root, f"no scans in the test subsets {list(test_subsets)}")
    rng = np.random.default_rng(split_seed)
    order = [train[i] for i in rng.permutation(len(train))]
    if labeled > len(order):
        raise KitInputError(folder.root, f"{labeled} labeled scans asked for, but only {len(order)} training scans")
    pool = folder.unlabeled_paths()
    if unlabeled > len(pool):
        raise KitInputError(folder.root / "unlabeled", f"{unlabeled} unlabeled scans asked for, but the pool has {len(pool)}")
    pool_order = [pool[i] for i in np.random.default_rng(split_seed + 1).permutation(len(pool))]
    return ScanSplit(
        labeled=tuple(order[:labeled] if labeled else order),
        test=tuple(test),
        unlabeled=tuple(pool_order[:unlabeled]),
    )
