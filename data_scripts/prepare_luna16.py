"""Put a LUNA16 download (and an unlabeled pool such as NLST) into the kit's data layout.

Where the data comes from
-------------------------
LUNA16 (https://luna16.grand-challenge.org/Download/, registration required; also on
Zenodo, records 3723295 and 4121926): ``subset0.zip`` .. ``subset9.zip`` (888 CT scans as
``<seriesuid>.mhd`` + ``.raw``, about 120 GB unpacked), ``annotations.csv`` (1186
nodules >= 3 mm), ``candidates.csv`` / ``candidates_V2.csv`` (candidate locations, not
needed by the kit) and ``evaluationScript.zip`` (whose ``annotations/`` folder holds
``annotations_excluded.csv`` and ``seriesuids.csv``). Unlabeled scans, e.g. NLST low-dose
CT from the TCIA (https://www.cancerimagingarchive.net/collection/nlst/), come as DICOM
series folders; NIfTI (.nii / .nii.gz) or .mhd files work as well.

What the script does
--------------------
1. ``subsetK``: a folder ``LUNA/subsetK`` is linked as ``OUT/subsetK``; a zip
   ``LUNA/subsetK.zip`` is unpacked into ``OUT``.
2. Copies ``annotations.csv`` and, found anywhere below ``LUNA`` (e.g. in the unpacked
   evaluation script), ``annotations_excluded.csv``, ``seriesuids.csv`` and the
   candidates files. Without a ``seriesuids.csv`` it writes one from the scans present.
3. With ``--unlabeled SRC``: links every NIfTI / .mhd file and every DICOM series
   folder (a folder holding .dcm files) found below SRC into ``OUT/unlabeled/``,
   named after its path below SRC.
4. Checks the result with ``focalmix check-data`` (``check_luna16_folder``) and exits
   with status 2 if anything is missing or inconsistent.

    python data_scripts/prepare_luna16.py --luna ~/downloads/luna16 --out data/luna16 \\
        --unlabeled ~/downloads/nlst
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import zipfile
from pathlib import Path

from focalmix_lib.data.luna_csv import write_seriesuids
from focalmix_lib.data.validate import check_luna16_folder

TABLES = ("annotations.csv", "annotations_excluded.csv", "seriesuids.csv", "candidates.csv", "candidates_V2.csv")


def link_subsets(luna: Path, out: Path) -> list[str]:
    """Link ``subsetK`` folders or unpack ``subsetK.zip`` archives into ``out``; returns the subsets."""
    done = []
    for k in range(10):
        folder, archive, target = luna / f"subset{k}", luna / f"subset{k}.zip", out / f"subset{k}"
        if target.exists():
            done.append(target.name)
        elif folder.is_dir():
            os.symlink(folder.resolve(), target, target_is_directory=True)
            done.append(target.name)
        elif archive.is_file():
            print(f"unpacking {archive} ...", flush=True)
            with zipfile.ZipFile(archive) as zipped:
                zipped.extractall(out)  # the archives hold subsetK/<uid>.mhd + .raw
            done.append(target.name)
    return done


def copy_tables(luna: Path, out: Path) -> None:
    """Copy the LUNA16 CSV files (first match below ``luna``); write seriesuids.csv if absent."""
    for name in TABLES:
        found = sorted(luna.rglob(name), key=lambda p: len(p.parts))
        if found and not (out / name).exists():
            shutil.copyfile(found[0], out / name)
    if not (out / "seriesuids.csv").exists():
        write_seriesuids(out / "seriesuids.csv", sorted(p.stem for p in out.glob("subset*/*.mhd")))


def link_unlabeled(source: Path, out: Path) -> int:
    """Link NIfTI / .mhd files and DICOM series folders below ``source`` into ``out/unlabeled``."""
    pool = out / "unlabeled"
    pool.mkdir(exist_ok=True)
    count = 0
    for path in sorted(source.rglob("*")):
        is_volume = path.is_file() and path.name.endswith((".nii", ".nii.gz", ".mhd"))
        is_series = path.is_dir() and any(p.suffix.lower() == ".dcm" for p in path.iterdir())
        if not (is_volume or is_series):
            continue
        name = "_".join(path.relative_to(source).parts)
        target = pool / name
        if not target.exists():
            os.symlink(path.resolve(), target, target_is_directory=path.is_dir())
            if path.name.endswith(".mhd"):  # the header names its .raw beside it
                raw = path.with_suffix(".raw")
                if raw.is_file():
                    os.symlink(raw.resolve(), pool / name.replace(".mhd", ".raw"))
        count += 1
    return count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--luna", required=True, type=Path, help="folder with the LUNA16 download")
    parser.add_argument("--out", required=True, type=Path, help="kit data folder to write")
    parser.add_argument("--unlabeled", type=Path, help="folder of unlabeled DICOM series / NIfTI scans (e.g. NLST)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    subsets = link_subsets(args.luna, args.out)
    copy_tables(args.luna, args.out)
    print(f"subsets: {', '.join(subsets) or 'none'}")
    if args.unlabeled is not None:
        print(f"unlabeled scans linked: {link_unlabeled(args.unlabeled, args.out)}")
    report = check_luna16_folder(args.out)
    print(report.format(), file=sys.stdout if report.ok else sys.stderr)
    return 0 if report.ok else 2


if __name__ == "__main__":
    sys.exit(main())
