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


@pytest.fixture(scope="session")
def tiny_phantoms(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 labeled scans of 80 x 80 pixels and 2 unlabeled (the chapters' CI data). Read only."""
    from focalmix_lib.data.phantoms import make_phantoms, profile_from_name

    out = tmp_path_factory.mktemp("notebook_data") / "tiny"
    profile = profile_from_name("quick", n_labeled=4, n_unlabeled=2, in_plane_size=80, scan_length_mm=(150.0, 160.0))
    make_phantoms(out, profile, seed=0, progress=False)
    return out


# The smallest teaching model whose averaged anchor map peaks on the test nodule (tests/test_teaching_model.py
# and chapter 03; 150 steps did until the weights went channels-last, whose rounding moved the 150-step peak).
TEACHING_STEPS = 200


@pytest.fixture(scope="session")
def teaching_steps(tiny_phantoms: Path) -> int:
    """Steps of CI's teaching model, trained once per session into ``tiny_phantoms``' cache."""
    from focalmix_lib.reproduction.teaching_model import teaching_model

    teaching_model(tiny_phantoms, steps=TEACHING_STEPS, progress=False)
    return TEACHING_STEPS
