"""Training throughput of the kit's supervised step against MONAI's 3D RetinaNetDetector, side by side.

    PYTHONPATH=. python benchmarks/bench_training.py [--presets quick standard] [--steps 10] [--repeats 5]

Both detectors train on the same synthetic batches (the preset's patch size and
``batch_labeled``; half of the patches hold one bright cube with its box) with
AdamW, gradient clipping at ``grad_clip``, focal loss on the anchors and a box
loss on the positives. One timed step is forward + loss + backward + optimiser
step; no data loading is timed. The two are timed in alternation, ``--repeats``
times ``--steps`` steps after a warm-up, on ``--threads`` CPU threads; the report
gives medians, patches per second and the ratio ours / MONAI (> 1: ours is faster).

MONAI (installed for the benchmark only, ``pip install --no-deps monai``) is built
the way its LUNA16 tutorial builds it, made small enough to match our parameter
count: a basic-block ResNet (conv1 stride 2, then a max-pool for the standard preset and
none for the quick one), FPN on layer1 and layer2 plus MONAI's extra max-pooled level,
so that its levels are ours (strides 2, 4, 8 for quick, 4, 8, 16 for standard) and it
has as many anchors as ours; the 4-convolution
RetinaNet heads, cubic anchors of our finest level's sizes (scaled by 1, 2, 4),
the ATSS matcher, the hard-negative sampler (64 anchors per image, 30 % positive),
``monai.losses.FocalLoss(gamma=2)`` and smooth L1 on the box deltas. torchvision
is stood in for by ``_torchvision_stubs``.

Then inference: seconds per scan of ``detect_volume`` (untrained model, the
preset's window overlap) on a quick phantom test scan when ``--data`` holds the
quick phantoms, and on a volume of a standard phantom's resampled size.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from focalmix_lib.config import from_preset
from focalmix_lib.data.dataset import Luna16Folder, load_preprocessed
from focalmix_lib.data.splits import split_scans
from focalmix_lib.detection.model import FPNDetector
from focalmix_lib.inference.sliding_window import detect_volume
from focalmix_lib.training.config import TrainConfig
from focalmix_lib.training.data import Batch
from focalmix_lib.training.detector import build_model, place_model
from focalmix_lib.training.objective import step_losses

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _torchvision_stubs

# MONAI ResNet width (layer1; layer2 doubles it) and FPN width (a multiple of the heads' 8 groups),
# chosen per preset so that the MONAI model has about as many parameters as ours.
MONAI_WIDTHS = {"quick": (20, 16), "standard": (32, 48)}


def monai_strides(ours: FPNDetector) -> tuple[int, int, int]:
    """MONAI's levels: layer1, layer2 and its extra max-pooled level; without the ResNet's
    max-pool they sit at strides 2, 4, 8 (the quick preset's), with it at 4, 8, 16 (standard's)."""
    finest = min(ours.config.strides)
    strides = (finest, 2 * finest, 4 * finest)
    if finest not in (2, 4) or tuple(ours.config.strides) != strides:
        raise ValueError(f"MONAI's three levels cannot mirror our strides {ours.config.strides}")
    return strides

# Resampled shape (D, H, W) of a standard phantom at 1.5 mm: 260 mm long, 176 x 1.9 mm in plane.
STANDARD_SCAN_SHAPE = (174, 224, 224)

Step = Callable[[int, Batch], None]


def synthetic_batch(cfg: TrainConfig, rng: np.random.Generator, with_unlabeled: bool = False) -> Batch:
    """Patches ``(B_l, 1, P, P, P)`` of noise, half with one bright cube (3-12 voxels) and its box.

    Unlabeled patches ``(B_u, 1, P, P, P)`` are drawn the same way when ``with_unlabeled``.
    """
    size = cfg.patch_size

    def patches(count: int) -> tuple[Tensor, list[Tensor]]:
        images = rng.normal(0.0, 0.3, (count, 1, size, size, size)).astype(np.float32)
        boxes = []
        for image in images:
            if rng.random() < cfg.positive_fraction:
                side = int(rng.integers(3, 13))
                z, y, x = rng.integers(0, size - side, 3)
                image[0, z:z + side, y:y + side, x:x + side] += 1.0
                boxes.append(torch.tensor([[z, y, x, z + side, y + side, x + side]], dtype=torch.float32))
            else:
                boxes.append(torch.zeros((0, 6)))
        return torch.from_numpy(images), boxes

    labeled, boxes = patches(cfg.batch_labeled)
    unlabeled = patches(cfg.batch_unlabeled)[0] if with_unlabeled else None
    return Batch(labeled, boxes, unlabeled)


def parameter_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def kit_model(cfg: TrainConfig) -> FPNDetector:
    """The run's detector as the engine places it on the CPU (channels-last weights)."""
    return place_model(build_model(cfg), torch.device("cpu"))


def our_training_step(cfg: TrainConfig, model: FPNDetector) -> Step:
    """One step of the kit's engine (``engine.train_loop`` on the CPU): ``step_losses``, backward, clip, AdamW.

    Every step runs at the end of the unlabeled-weight ramp (``step = rampup_steps``)."""
    cfg = cfg.resolved()
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)

    def step(index: int, batch: Batch) -> None:
        generator = torch.Generator().manual_seed(index)
        losses = step_losses(model, batch, cfg, cfg.rampup_steps, generator)
        optimizer.zero_grad(set_to_none=True)
        losses.total.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()

    return step


def monai_detector(cfg: TrainConfig, ours: FPNDetector) -> torch.nn.Module:
    """MONAI's RetinaNetDetector sized like our model of the preset (see the module docstring)."""
    _torchvision_stubs.install()
    from monai.apps.detection.networks.retinanet_detector import RetinaNetDetector
    from monai.apps.detection.networks.retinanet_network import RetinaNet
    from monai.apps.detection.utils.anchor_utils import AnchorGeneratorWithAnchorShape
    from monai.losses import FocalLoss
    from monai.networks.blocks.backbone_fpn_utils import BackboneWithFPN
    from monai.networks.nets import resnet

    width, fpn_width = MONAI_WIDTHS[cfg.model_preset]
    backbone = resnet.ResNet(block="basic", layers=[1, 1, 1, 1], block_inplanes=[width, 2 * width, 4 * width, 8 * width],
                             spatial_dims=3, n_input_channels=1, conv1_t_size=3, conv1_t_stride=2, feed_forward=False)
    if monai_strides(ours)[0] == 2:
        # layer1 at stride 2, as in our quick preset. The FPN's layer getter runs the ResNet's
        # children in order (ResNet's no_max_pool flag acts only in its own forward), so the
        # max-pool itself goes.
        backbone.maxpool = torch.nn.Identity()
    features = BackboneWithFPN(backbone, {"layer1": "0", "layer2": "1"}, [width, 2 * width], fpn_width, spatial_dims=3)
    sizes = ours.config.anchor_sizes[0]
    network = RetinaNet(spatial_dims=3, num_classes=1, num_anchors=len(sizes), feature_extractor=features,
                        size_divisible=16)
    anchors = AnchorGeneratorWithAnchorShape(feature_map_scales=(1, 2, 4), base_anchor_shapes=[(s, s, s) for s in sizes])
    detector = RetinaNetDetector(network, anchors)
    detector.set_atss_matcher(num_candidates=4, center_in_gt=False)
    detector.set_hard_negative_sampler(batch_size_per_image=64, positive_fraction=0.3, pool_size=20, min_neg=16)
    detector.set_cls_loss(FocalLoss(reduction="mean", gamma=2.0))
    detector.train()
    return detector


def monai_training_step(cfg: TrainConfig, detector: torch.nn.Module) -> Step:
    """Forward in training mode (losses), backward, clip, AdamW: MONAI's tutorial loop without data loading."""
    optimizer = torch.optim.AdamW(detector.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)

    def step(index: int, batch: Batch) -> None:
        targets = [{"boxes": b, "labels": torch.zeros(len(b), dtype=torch.long)} for b in batch.boxes]
        losses = detector(batch.labeled, targets)
        loss = losses[detector.cls_key] + losses[detector.box_reg_key]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(detector.parameters(), cfg.grad_clip)
        optimizer.step()

    return step


def forward_gflops(network: torch.nn.Module, cfg: TrainConfig) -> float:
    """Floating-point operations (10^9) of one forward pass over a batch of ``batch_labeled`` patches."""
    from torch.utils.flop_counter import FlopCounterMode

    images = torch.zeros((cfg.batch_labeled, 1) + (cfg.patch_size,) * 3)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        network(images)
    return counter.get_total_flops() / 1e9


def time_steps(step: Step, batches: list[Batch], first_index: int) -> float:
    """Seconds per step, averaged over one pass through ``batches``."""
    start = time.perf_counter()
    for offset, batch in enumerate(batches):
        step(first_index + offset, batch)
    return (time.perf_counter() - start) / len(batches)


def compare(steps: dict[str, Step], batches: list[Batch], warmup: int, repeats: int) -> dict[str, list[float]]:
    """Seconds per step of each named step function, timed in alternation ``repeats`` times."""
    for step in steps.values():
        time_steps(step, batches[:warmup], 0)
    seconds: dict[str, list[float]] = {name: [] for name in steps}
    for repeat in range(repeats):
        for name, step in steps.items():
            seconds[name].append(time_steps(step, batches, warmup + repeat * len(batches)))
    return seconds


@dataclass(frozen=True)
class LoadSample:
    """Load average when a measurement started and ended."""

    before: float
    after: float

    def __str__(self) -> str:
        return f"load average {self.before:.1f} -> {self.after:.1f}"


def measure_load(run: Callable[[], object]) -> tuple[object, LoadSample]:
    before = os.getloadavg()[0]
    result = run()
    return result, LoadSample(before, os.getloadavg()[0])


def bench_training(preset: str, steps: int, warmup: int, repeats: int) -> None:
    cfg = from_preset(TrainConfig, preset)
    ours = kit_model(cfg)
    before = build_model(cfg)  # the same weights in the contiguous layout the kit used before
    torch.manual_seed(cfg.seed)
    theirs = monai_detector(cfg, ours)
    rng = np.random.default_rng(0)
    batches = [synthetic_batch(cfg, rng) for _ in range(max(steps, warmup))]
    seconds, load = measure_load(lambda: compare(
        {"ours": our_training_step(cfg, ours), "before": our_training_step(cfg, before),
         "monai": monai_training_step(cfg, theirs)}, batches[:steps], warmup, repeats))
    ours_s, before_s, monai_s = (statistics.median(seconds[k]) for k in ("ours", "before", "monai"))
    anchors_theirs = len(ours.config.anchor_sizes[0]) * sum((cfg.patch_size // s) ** 3 for s in monai_strides(ours))
    print(f"{preset}: {cfg.patch_size}^3 patches, batch {cfg.batch_labeled}, {repeats} x {steps} steps after "
          f"{warmup} warm-up, {torch.get_num_threads()} threads, {load}")
    print(f"  ours : {parameter_count(ours):9,d} parameters, {len(ours.anchors((cfg.patch_size,) * 3)):6d} anchors "
          f"(strides {ours.config.strides}), "
          f"{forward_gflops(ours, cfg):6.1f} GFLOP/forward, "
          f"{ours_s:6.3f} s/step, {cfg.batch_labeled / ours_s:6.2f} patches/s   (all: "
          + ", ".join(f"{s:.3f}" for s in seconds["ours"]) + ")")
    print(f"  MONAI: {parameter_count(theirs):9,d} parameters, {anchors_theirs:6d} anchors "
          f"(strides {monai_strides(ours)}), "
          f"{forward_gflops(theirs.network, cfg):6.1f} GFLOP/forward, "
          f"{monai_s:6.3f} s/step, {cfg.batch_labeled / monai_s:6.2f} patches/s   (all: "
          + ", ".join(f"{s:.3f}" for s in seconds["monai"]) + ")")
    print(f"  ours with contiguous weights (before): {before_s:6.3f} s/step   (all: "
          + ", ".join(f"{s:.3f}" for s in seconds["before"]) + ")")
    print(f"  ratio ours / MONAI (patches per second): {monai_s / ours_s:.2f} "
          f"(contiguous weights: {monai_s / before_s:.2f}; channels-last / contiguous: {before_s / ours_s:.2f})")


def quick_test_volume(data_dir: Path) -> np.ndarray | None:
    """The first test scan of the quick phantoms, resampled (cached in a temporary folder), or None."""
    if not (data_dir / "annotations.csv").is_file():
        return None
    cfg = replace(from_preset(TrainConfig, "quick"), data_dir=str(data_dir))
    folder = Luna16Folder(data_dir)
    uid = split_scans(folder, cfg.test_subsets, cfg.labeled, 0, cfg.split_seed).test[0]
    with tempfile.TemporaryDirectory() as cache:
        return load_preprocessed(folder.scan_path(uid), cfg.spacing_mm, None, cache).volume


def bench_inference(preset: str, volume: np.ndarray, description: str, repeats: int) -> None:
    cfg = from_preset(TrainConfig, preset)
    model = kit_model(cfg)
    run = lambda: detect_volume(model, volume, cfg.patch_size, cfg.window_overlap, cfg.score_threshold,
                                cfg.nms_iou, cfg.max_detections)
    run()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    print(f"inference, {preset} model on {description} {volume.shape}: {statistics.median(times):.2f} s/scan "
          f"(median of {repeats}; untrained model, overlap {cfg.window_overlap}; load average "
          f"{os.getloadavg()[0]:.1f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["quick", "standard"], choices=sorted(MONAI_WIDTHS))
    parser.add_argument("--steps", type=int, default=10, help="timed steps per repeat")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--data", type=Path, default=Path("data/quick"), help="quick phantoms (for inference)")
    parser.add_argument("--skip-inference", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for preset in args.presets:
        bench_training(preset, args.steps, args.warmup, args.repeats)
    if args.skip_inference:
        return
    volume = quick_test_volume(args.data)
    if volume is not None:
        bench_inference("quick", volume, f"a quick phantom test scan of {args.data}", 3)
    else:
        print(f"(no quick phantoms in {args.data}: quick inference skipped; make them with focalmix make-data)")
    rng = np.random.default_rng(0)
    bench_inference("standard", rng.normal(0, 0.3, STANDARD_SCAN_SHAPE).astype(np.float32),
                    "a standard-phantom-sized noise volume", 1)


if __name__ == "__main__":
    main()
