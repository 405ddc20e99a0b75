"""Whole-scan inference: the kit's ``detect_volume`` against all-window sliding and MONAI's SlidingWindowInferer.

    PYTHONPATH=. python benchmarks/bench_inference.py [--data data/quick] [--run RUN] [--repeats 3] [--threads 2]

On a quick phantom test scan (quick model, 32^3 windows, overlap 0.25) and on a
standard-sized volume (about 300 x 250 x 250 voxels at 1.5 mm: the quick scan and
its lung mask zoomed, standard model, 64^3 windows), timed in alternation in the
same run:

- ``kit``: ``detect_volume`` as ``detect_run`` calls it: windows only over the lung
  mask grown by ``lung_margin_mm``, 8 windows a forward pass, batched decoding, the
  lung filter before NMS;
- ``all windows``: the same function over every window of the volume, 4 a pass
  (the kit's path before; the peer for what skipping windows buys);
- ``MONAI``: ``monai.inferers.SlidingWindowInferer`` (same model, window, overlap,
  4 windows a pass, constant blending) over the whole volume, returning the
  stitched classification and box maps (no decoding or NMS: MONAI's detector does
  those after it);
- ``forward``: one forward pass of a batch of 4 windows, the unit the issue counts in.

The model is ``--run``'s trained detector for the quick scan where given, else an
untrained one (the forward passes, which are almost all of the time, cost the same).
Prints the minimum and the median of ``--repeats``, ratios (> 1: the kit is faster) and the load average.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from focalmix_lib.config import from_preset
from focalmix_lib.data.dataset import Luna16Folder, load_preprocessed
from focalmix_lib.detection.model import FPNDetector
from focalmix_lib.inference.run_detection import TrainedRun, grown_lung_mask
from focalmix_lib.inference.sliding_window import detect_volume, window_origins
from focalmix_lib.training.config import TrainConfig
from focalmix_lib.training.data import test_uids

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _torchvision_stubs  # a sibling script module; MONAI imports torchvision helpers
from bench_training import kit_model

STANDARD_SHAPE = (300, 250, 250)


def quick_test_scan(data_dir: Path):
    """The first test scan of the quick phantoms in ``data_dir``, preprocessed (cache in a temporary folder)."""
    cfg = replace(from_preset(TrainConfig, "quick"), data_dir=str(data_dir))
    with tempfile.TemporaryDirectory() as cache:
        return load_preprocessed(Luna16Folder(data_dir).scan_path(test_uids(cfg)[0]), cfg.spacing_mm, None, cache)


def timed(run: Callable[[], object], repeats: int) -> list[float]:
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        seconds.append(time.perf_counter() - start)
    return seconds


def monai_inferer(model: FPNDetector, cfg: TrainConfig) -> Callable[[torch.Tensor], object]:
    """MONAI's sliding-window inference of the model's classification and box maps over a whole volume."""
    _torchvision_stubs.install()
    from monai.inferers import SlidingWindowInferer

    inferer = SlidingWindowInferer(roi_size=(cfg.patch_size,) * 3, sw_batch_size=4, overlap=cfg.window_overlap,
                                   mode="constant")

    def maps(windows: torch.Tensor) -> tuple[torch.Tensor, ...]:
        output = model(windows)
        return (*output.cls_logits, *(d.flatten(1, 2) for d in output.box_deltas))

    return lambda volume: inferer(volume, maps)


def bench(name: str, cfg: TrainConfig, model: FPNDetector, volume: np.ndarray, lungs: np.ndarray, repeats: int
          ) -> None:
    model.eval()
    region = grown_lung_mask(lungs, cfg.lung_margin_mm / cfg.spacing_mm)
    kit_windows = len(window_origins(volume.shape, cfg.patch_size, cfg.window_overlap, region))
    all_windows = len(window_origins(volume.shape, cfg.patch_size, cfg.window_overlap))
    batch = torch.rand(4, 1, *(cfg.patch_size,) * 3)
    tensor = torch.from_numpy(volume)[None, None]
    infer = monai_inferer(model, cfg)
    settings = (cfg.patch_size, cfg.window_overlap, cfg.score_threshold, cfg.nms_iou, cfg.max_detections)
    runs = {
        "kit": lambda: detect_volume(model, volume, *settings, batch_size=8, region=region),
        "all windows": lambda: detect_volume(model, volume, *settings, batch_size=4),
        "MONAI": lambda: infer(tensor),
        "forward": lambda: model(batch),
    }
    with torch.no_grad():
        for run in runs.values():  # warm-up
            run()
        seconds: dict[str, list[float]] = {key: [] for key in runs}
        load_before = os.getloadavg()[0]
        for _ in range(repeats):  # alternation: every contender sees the same machine load
            for key, run in runs.items():
                seconds[key] += timed(run, 1)
        load_after = os.getloadavg()[0]
    print(f"{name} {volume.shape}, {cfg.model_preset} model, {cfg.patch_size}^3 windows, overlap "
          f"{cfg.window_overlap}, {torch.get_num_threads()} threads, load average {load_before:.1f} -> "
          f"{load_after:.1f}; {repeats} repeats")
    print(f"  windows: kit {kit_windows} (lung mask grown by {cfg.lung_margin_mm:g} mm), all {all_windows}")
    # The minimum is the run least disturbed by the other users of a shared machine; the median is shown beside it.
    for label, pick in (("min", min), ("median", statistics.median)):
        best = {key: pick(values) for key, values in seconds.items()}
        print(f"  {label}: forward of 4 windows {best['forward']:.3f} s; " + "; ".join(
            f"{key} {best[key]:.2f} s = {best[key] / best['forward']:.1f} forwards" for key in ("kit", "all windows", "MONAI")))
        print(f"  {label}: ratio all windows / kit {best['all windows'] / best['kit']:.2f}, "
              f"ratio MONAI / kit {best['MONAI'] / best['kit']:.2f}")
    for key in ("kit", "all windows", "MONAI"):
        print(f"  {key} seconds: {', '.join(f'{s:.2f}' for s in seconds[key])}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("data/quick"), help="quick phantoms (focalmix make-data)")
    parser.add_argument("--run", type=Path, help="a trained quick run (default: an untrained quick model)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-standard", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    scan = quick_test_scan(args.data)

    quick = from_preset(TrainConfig, "quick")
    model = TrainedRun.load(args.run, device="cpu").model if args.run else kit_model(quick)
    bench("quick phantom test scan", quick, model, scan.volume, scan.lung_mask, args.repeats)
    if args.skip_standard:
        return
    standard = from_preset(TrainConfig, "standard")
    factors = np.asarray(STANDARD_SHAPE) / np.asarray(scan.volume.shape)
    volume = ndimage.zoom(scan.volume, factors, order=1).astype(np.float32)
    lungs = ndimage.zoom(scan.lung_mask, factors, order=0)
    bench("standard-sized volume (quick scan zoomed)", standard, kit_model(standard), volume, lungs, args.repeats)


if __name__ == "__main__":
    main()
