"""The machine a run or a benchmark ran on, as reports state it."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import focalmix_lib


def kit_revision() -> str:
    """The kit's version and, when it runs from a git checkout, its commit (``+dirty``: uncommitted changes)."""
    root = Path(focalmix_lib.__file__).resolve().parent.parent
    if not (root / "pyproject.toml").is_file():  # an installed wheel (perhaps in a venv inside some repository)
        return focalmix_lib.__version__
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):  # no git, or not a repository
        return focalmix_lib.__version__
    return f"{focalmix_lib.__version__}+{commit}" + ("+dirty" if dirty else "")


def machine_description() -> dict[str, Any]:
    """CPU model, core count, GPU name, torch and Python versions of this machine, and the kit's revision."""
    import torch

    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text(encoding="utf-8").splitlines()
                 if line.startswith("model name")]
        cpu = names[0] if names else cpu
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu": cpu, "cores": os.cpu_count(), "gpu": gpu, "torch": torch.__version__,
            "python": platform.python_version(), "kit": kit_revision()}
