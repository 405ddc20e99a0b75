"""The run folder: config.yaml, metrics.jsonl, checkpoints/, status, predictions.csv, froc.json.

Everything here is written atomically, so an interrupted run leaves a folder from
which the same command resumes. A damaged checkpoint (truncated by a full disk, a
copy cut short) is skipped with a warning naming it, so a run resumes from the newest
intact one; a checkpoint that holds anything but tensors and plain data is refused.
"""

from __future__ import annotations

import json
import pickle
import re
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from focalmix_lib import atomic
from focalmix_lib.errors import KitInputError

STATUSES = ("running", "completed", "diverged", "failed")
_CHECKPOINT = re.compile(r"^step_(\d+)\.pt$")


class DamagedCheckpointWarning(UserWarning):
    """A checkpoint file that cannot be read back; the run folder skips it."""


@dataclass(frozen=True)
class RunFolder:
    path: Path

    @property
    def config_path(self) -> Path:
        return self.path / "config.yaml"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def checkpoint_dir(self) -> Path:
        return self.path / "checkpoints"

    @property
    def predictions_path(self) -> Path:
        return self.path / "predictions.csv"

    @property
    def froc_path(self) -> Path:
        return self.path / "froc.json"

    @property
    def outcome_path(self) -> Path:
        """A grid run's record (status, error, seconds, machine), written by the reproduction."""
        return self.path / "outcome.json"

    @property
    def timings_path(self) -> Path:
        return self.path / "timings.json"

    # --- time spent per stage ---------------------------------------------------
    def read_timings(self) -> dict[str, float]:
        """Seconds spent in each stage (scan loading, training steps, detection, evaluation)."""
        return json.loads(self.timings_path.read_text(encoding="utf-8")) if self.timings_path.is_file() else {}

    def add_seconds(self, stage: str, seconds: float) -> None:
        """Add ``seconds`` to ``stage`` in timings.json (a resumed run adds to what it spent before)."""
        timings = self.read_timings()
        timings[stage] = round(timings.get(stage, 0.0) + seconds, 3)
        atomic.write_json(self.timings_path, timings)

    # --- status -----------------------------------------------------------------
    def status(self) -> str | None:
        """``None`` for a run that never started, else one of :data:`STATUSES`."""
        path = self.path / "status"
        return path.read_text(encoding="utf-8").split("\n", 1)[0].strip() if path.is_file() else None

    def error(self) -> str:
        """The message stored with a ``failed`` or ``diverged`` status ("" if none)."""
        path = self.path / "status"
        return path.read_text(encoding="utf-8").partition("\n")[2].strip() if path.is_file() else ""

    def set_status(self, status: str, message: str = "") -> None:
        """Write the status file. ``running`` means a run (re)starts and owns the folder: the
        temporary files that killed writes left behind are removed first."""
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
        if status == "running":
            atomic.remove_temporaries(self.path)
            atomic.remove_temporaries(self.checkpoint_dir)
        atomic.write_text(self.path / "status", f"{status}\n{message}".rstrip("\n") + "\n")

    # --- metrics ----------------------------------------------------------------
    def read_metrics(self) -> list[dict[str, Any]]:
        if not self.metrics_path.is_file():
            return []
        return [json.loads(line) for line in self.metrics_path.read_text(encoding="utf-8").splitlines() if line]

    def truncate_metrics(self, last_step: int) -> None:
        """Drop lines logged after ``last_step`` (a resumed run logs them again)."""
        kept = [m for m in self.read_metrics() if m["step"] <= last_step]
        atomic.write_text(self.metrics_path, "".join(json.dumps(m) + "\n" for m in kept))

    def append_metrics(self, records: list[dict[str, Any]]) -> None:
        """Append records; the whole file is rewritten atomically (it stays small)."""
        if not records:
            return
        old = self.metrics_path.read_text(encoding="utf-8") if self.metrics_path.is_file() else ""
        atomic.write_text(self.metrics_path, old + "".join(json.dumps(r) + "\n" for r in records))

    # --- checkpoints ------------------------------------------------------------
    def checkpoints(self) -> list[tuple[int, Path]]:
        """(step, path) of every intact checkpoint, oldest first; damaged ones are skipped with a warning."""
        return [(step, path) for step, path in self._checkpoint_files() if _intact(path)]

    def save_checkpoint(self, step: int, state: dict[str, Any], keep: int = 2) -> Path:
        """Write ``checkpoints/step_<step>.pt`` atomically; keep only the newest ``keep`` intact ones."""
        path = self.checkpoint_dir / f"step_{step:07d}.pt"
        with atomic.atomic_path(path) as tmp:
            torch.save(state, tmp)
        kept = {p for _, p in self.checkpoints()[-keep:]}
        for _, old in self._checkpoint_files():
            if old not in kept:
                old.unlink(missing_ok=True)
        return path

    def load_checkpoint(self, path: Path | None = None, map_location: str | torch.device = "cpu") -> dict[str, Any]:
        """Load the newest intact (or the given) checkpoint as data only (``weights_only=True``).

        A file that holds other Python objects is refused (KitInputError naming it): the
        kit's checkpoints hold only tensors and plain data, and unpickling anything else
        could run code.
        """
        if path is None:
            found = self.checkpoints()
            if not found:
                raise KitInputError(self.checkpoint_dir, "no intact checkpoint: the run has not trained yet")
            path = found[-1][1]
        try:
            return torch.load(path, map_location=map_location, weights_only=True)
        except pickle.UnpicklingError:
            raise KitInputError(path, "refused: it holds Python objects other than tensors and plain data, so the "
                                      "kit did not write it; remove it (an older checkpoint is then used)") from None
        except (RuntimeError, EOFError, OSError) as error:
            raise KitInputError(path, f"unreadable checkpoint ({_first_line(error)})") from None

    def _checkpoint_files(self) -> list[tuple[int, Path]]:
        """(step, path) of every file named like a checkpoint, oldest first, intact or not."""
        if not self.checkpoint_dir.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in self.checkpoint_dir.iterdir() if (m := _CHECKPOINT.match(p.name))]
        return sorted(found)


def _intact(path: Path) -> bool:
    """Whether ``path`` is a whole torch checkpoint: a zip archive whose every member passes its CRC.

    torch.save writes a zip archive; a truncated file has no central directory, and a
    damaged byte fails its member's CRC (torch.load itself would not notice that one).
    """
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
            problem = None if bad is None else f"member {bad} fails its CRC check"
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        problem = _first_line(error) or "empty file"
    if problem is not None:
        warnings.warn(f"{path}: damaged checkpoint skipped ({problem}); the newest intact one is used",
                      DamagedCheckpointWarning, stacklevel=3)
    return problem is None


def _first_line(error: BaseException) -> str:
    return str(error).strip().split("\n", 1)[0]
