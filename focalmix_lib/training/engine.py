"""One training engine for every run of the kit: supervised, with MixUp, and FocalMix.

``train(cfg, run_dir)`` writes the run folder (config.yaml, metrics.jsonl,
checkpoints/, status), resumes from the newest checkpoint when the folder already
holds one, and ends with status ``completed``, ``diverged`` (a non-finite loss: the
paper's "Fail"; the function returns normally so a grid goes on) or ``failed``.

Every random choice of step ``t`` comes from generators seeded with ``(seed, t)``,
and the model, optimiser and schedule states are checkpointed, so on the CPU a
resumed run continues bit-identically. Launched by ``torchrun`` the same code trains
with DistributedDataParallel: each process samples its own patches, rank 0 writes.
"""

from __future__ import annotations

import math
import os
import time
import traceback
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from focalmix_lib.config import load_yaml, save_yaml
from focalmix_lib.errors import KitInputError
from focalmix_lib.detection.model import FPNDetector
from focalmix_lib.training.config import TrainConfig
from focalmix_lib.training.data import TrainingData, sample_batch
from focalmix_lib.training.detector import build_model, pick_device, place_model
from focalmix_lib.training.objective import step_losses
from focalmix_lib.training.run_folder import RunFolder

LogCallback = Callable[[dict[str, Any]], None]


def learning_rate_factor(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up over ``warmup_steps``, then cosine decay to zero at ``steps``."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def prepare_run_folder(run: RunFolder, cfg: TrainConfig) -> None:
    """Save config.yaml, or check that a resumed run asks for the same config.

    Only ``steps`` (extending a run) and ``device`` may differ from the saved config of a
    run that has trained; a folder whose run never reached its first checkpoint (it
    failed on bad input, say) takes the new config.
    """
    if not run.config_path.is_file() or not run.checkpoints():
        run.path.mkdir(parents=True, exist_ok=True)
        save_yaml(cfg, run.config_path)
        return
    saved = load_yaml(TrainConfig, run.config_path)
    changed = [f.name for f in fields(cfg)
               if f.name not in ("steps", "device") and getattr(saved, f.name) != getattr(cfg, f.name)]
    if changed:
        raise KitInputError(run.config_path, f"this run folder was made with other values of {changed}; "
                                             "use another --out folder, or the same settings to resume")
    save_yaml(cfg, run.config_path)


def train(cfg: TrainConfig, run_dir: str | Path, progress: bool = True, on_log: LogCallback | None = None) -> str:
    """Train (or resume) the run in ``run_dir``; returns its final status.

    ``on_log`` receives every metrics record as it is logged (notebooks draw live loss
    curves with it). A ``KeyboardInterrupt`` leaves the folder resumable.
    """
    cfg = cfg.resolved()
    run = RunFolder(Path(run_dir))
    distributed = _init_distributed()
    rank = dist.get_rank() if distributed else 0
    if rank == 0:
        prepare_run_folder(run, cfg)
    if run.status() == "completed" and any(step >= cfg.steps for step, _ in run.checkpoints()):
        return "completed"

    device = pick_device(cfg.device)
    if distributed and device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    model = place_model(build_model(cfg), device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: learning_rate_factor(s, cfg))
    start = 0
    if run.checkpoints():  # the newest intact one: a damaged newest checkpoint is skipped with a warning
        state = run.load_checkpoint(map_location=device)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start = int(state["step"])
    detector = model
    if distributed:
        model = torch.nn.parallel.DistributedDataParallel(model)
    if rank == 0:  # records after the checkpoint we resume from are logged again
        run.truncate_metrics(start)
        run.set_status("running")

    try:
        started = time.perf_counter()
        data = TrainingData.load(cfg, progress=progress and rank == 0)
        loaded = time.perf_counter()
        status = train_loop(cfg, run, model, detector, optimizer, scheduler, data, start, device, rank,
                            progress and rank == 0, on_log)
        if rank == 0:
            run.add_seconds("training scans", loaded - started)
            run.add_seconds("training steps", time.perf_counter() - loaded)
    except KeyboardInterrupt:
        raise
    except Exception:
        if rank == 0:
            run.set_status("failed", traceback.format_exc())
        raise
    if rank == 0:
        run.set_status(*status)
    return status[0]


def train_loop(cfg: TrainConfig, run: RunFolder, model: torch.nn.Module, detector: FPNDetector,
               optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LRScheduler,
               data: TrainingData, start: int, device: torch.device, rank: int, progress: bool,
               on_log: LogCallback | None) -> tuple[str, str]:
    """Steps ``start`` .. ``cfg.steps - 1``: sample, :func:`step_losses`, clip, AdamW; log and checkpoint.

    ``model`` is the module that trains (``detector`` itself, or its DDP wrapper). Returns
    the final ``(status, message)``: ``completed``, or ``diverged`` at the first
    non-finite loss (the paper's "Fail"; the checkpoint before it is kept).
    """
    use_amp = cfg.amp and device.type == "cuda"
    pending: list[dict[str, Any]] = []
    started = time.perf_counter()
    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, desc=f"{cfg.method} training",
               disable=not progress)
    for step in bar:
        rng = np.random.default_rng([cfg.seed, step, rank])
        generator = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step * 101 + rank)
        batch = sample_batch(data, cfg, rng).to(device)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_amp):
            losses = step_losses(detector, batch, cfg, step, generator, forward=model)
        if not torch.isfinite(losses.total):
            if rank == 0:
                run.append_metrics(pending)
            return "diverged", f"non-finite loss ({losses.total.item()}) at step {step}"
        optimizer.zero_grad(set_to_none=True)
        losses.total.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        scheduler.step()

        done = step + 1
        if rank == 0 and (done % cfg.log_every == 0 or done == cfg.steps):
            record = {
                "step": done, "loss": losses.total.item(), "loss_labeled": losses.labeled,
                "loss_unlabeled": losses.unlabeled, "loss_box": losses.box,
                "unlabeled_weight": losses.unlabeled_weight, "mixup_lambda": losses.mixup_lambda,
                "lr": scheduler.get_last_lr()[0], "seconds": round(time.perf_counter() - started, 3),
            }
            pending.append(record)
            bar.set_postfix(loss=f"{record['loss']:.4f}")
            if on_log is not None:
                on_log(record)
        if rank == 0 and (done % cfg.checkpoint_every == 0 or done == cfg.steps):
            run.append_metrics(pending)
            pending = []
            run.save_checkpoint(done, {
                "step": done, "model": detector.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
            })
    return "completed", ""


def _init_distributed() -> bool:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return True
