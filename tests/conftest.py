"""Shared fixtures: one quick phantom set per test session."""

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def quick_phantoms(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder written by ``make_phantoms(tmp, PhantomProfile quick, seed=0)`` (LUNA16 layout). Read only."""
    from focalmix_lib.data.phantoms import make_phantoms, profile_from_name

    out = tmp_path_factory.mktemp("phantoms") / "quick"
    make_phantoms(out, profile_from_name("quick"), seed=0, progress=False)
    return out
