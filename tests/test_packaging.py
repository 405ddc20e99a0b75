"""The package as users install it: the wheel's contents, the one list of dependencies, --version."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import yaml
from packaging.requirements import Requirement

import focalmix_lib
from focalmix_lib.reproduction.notebooks import NOTEBOOK_DIR

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
# Imported by the kit but installed by one of its declared requirements (import name -> requirement).
COMES_WITH = {"IPython": "ipykernel", "jupyter_client": "ipykernel", "PIL": "matplotlib", "magicgui": "napari",
              "qtpy": "napari"}
IMPORT_TO_REQUIREMENT = {"yaml": "pyyaml", "SimpleITK": "simpleitk"}


def _requirements() -> dict[str, Requirement]:
    """Every requirement of pyproject.toml (dependencies and extras), by normalised name."""
    project = PYPROJECT["project"]
    lines = [*project["dependencies"], *(r for extra in project["optional-dependencies"].values() for r in extra)]
    return {Requirement(line).name.lower(): Requirement(line) for line in lines}


def _third_party_imports() -> set[str]:
    names: set[str] = set()
    for path in (REPO / "focalmix_lib").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names and n != "focalmix_lib"}


def test_every_imported_library_is_declared() -> None:
    declared = _requirements()
    for name in sorted(_third_party_imports()):
        requirement = COMES_WITH.get(name, IMPORT_TO_REQUIREMENT.get(name, name)).lower()
        assert requirement in declared, f"focalmix_lib imports {name}, which pyproject.toml does not declare"
    assert "pandas" in declared


def test_torch_requirement_admits_the_cpu_wheel_that_kit_installs_first() -> None:
    torch = _requirements()["torch"]
    assert torch.specifier.contains("2.13.0") and not torch.specifier.contains("3.0.0")
    assert 'pip install -q "torch==2.13.0"' in (REPO / "kit").read_text(encoding="utf-8")


def test_environment_yml_takes_its_dependencies_from_pyproject() -> None:
    env = yaml.safe_load((REPO / "environment.yml").read_text(encoding="utf-8"))
    conda = [d for d in env["dependencies"] if isinstance(d, str)]
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert env["channels"] == ["conda-forge"]
    assert {d.split("=")[0].split(">")[0] for d in conda} == {"python", "pytorch", "pip"}
    torch_line = next(d for d in conda if d.startswith("pytorch"))
    assert Requirement(torch_line.replace("pytorch", "torch", 1)).specifier == _requirements()["torch"].specifier
    (editable,) = pip
    extras = Requirement(editable.removeprefix("-e ").replace(".", "focalmix-kit", 1)).extras
    assert extras and extras <= set(PYPROJECT["project"]["optional-dependencies"])


def test_listed_packages_are_every_package_of_the_library() -> None:
    listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
    folders = [p for p in (REPO / "focalmix_lib").rglob("*") if p.is_dir() and p.name != "__pycache__"]
    # paper/ holds only data (the published tables), read with importlib.resources.
    on_disk = {".".join(p.relative_to(REPO).parts) for p in folders if any(p.glob("*.py")) or p.name == "paper"}
    assert listed == {"focalmix_lib", *on_disk, "focalmix_lib.notebooks_data"}
    assert PYPROJECT["tool"]["setuptools"]["package-dir"]["focalmix_lib.notebooks_data"] == "notebooks"


def test_the_wheel_carries_the_chapters_and_the_installed_kit_finds_them(tmp_path: Path) -> None:
    source = tmp_path / "source"  # build from a copy: setuptools writes build/ beside pyproject.toml
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(REPO / "focalmix_lib", source / "focalmix_lib", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "notebooks", source / "notebooks", ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", str(source),
                    "-w", str(tmp_path / "wheel")], check=True, capture_output=True)
    (wheel,) = (tmp_path / "wheel").glob("focalmix_kit-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        archive.extractall(tmp_path / "site")
    expected = {str(p.relative_to(REPO).as_posix()) for p in (REPO / "focalmix_lib").rglob("*")
                if p.suffix in (".py", ".csv") and "__pycache__" not in p.parts}
    assert expected <= names
    chapters = sorted(p.name for p in (REPO / "notebooks").glob("*.ipynb"))
    assert {f"focalmix_lib/notebooks_data/{name}" for name in chapters} <= names

    # The installed copy, run from elsewhere: its notebooks, its version, no checkout in sight.
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}
    probe = ("from focalmix_lib.reproduction.notebooks import NOTEBOOK_DIR, DEFAULT_CWD; "
             "print(NOTEBOOK_DIR); print(sorted(p.name for p in NOTEBOOK_DIR.glob('*.ipynb'))); print(DEFAULT_CWD)")
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env, check=True, capture_output=True,
                         text=True).stdout.splitlines()
    assert out == [str(tmp_path / "site" / "focalmix_lib" / "notebooks_data"), repr(chapters), "None"]
    version = subprocess.run([sys.executable, "-m", "focalmix_lib", "--version"], cwd=tmp_path, env=env,
                             capture_output=True, text=True)
    assert (version.returncode, version.stdout.strip()) == (0, f"focalmix {focalmix_lib.__version__}")


def test_a_checkout_runs_its_own_notebooks() -> None:
    assert NOTEBOOK_DIR == REPO / "notebooks"
