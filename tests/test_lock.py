"""The lock files against pyproject.toml: every requirement pinned, with hashes, in both.

The venv and the image install the project with --no-deps on top of a lock, so a
requirement that pyproject.toml gains and `make lock` was not run for would be missing
without a word. These tests say so first, and name the fix.
"""

from __future__ import annotations

import platform
import re
import tomllib
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "requirements" / "all.txt"
IMAGE_LOCK = ROOT / "requirements" / "image.txt"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
STALE = "run `make lock` after changing pyproject.toml"


@dataclass(frozen=True)
class Pin:
    version: Version
    marker: Marker | None
    hashes: int


def pins(lock: Path) -> dict[str, Pin]:
    """name -> its pin, from a requirements file in the form `make lock` writes."""
    found = {}
    # One entry: `name==version [; marker]`, then its `--hash=` lines, then `# via` comments.
    for entry in re.split(r"\n(?=[A-Za-z0-9])", lock.read_text()):
        if not entry.strip() or entry.startswith("#"):
            continue
        head = entry.split("\\", 1)[0].strip()
        requirement = Requirement(head)
        (specifier,) = requirement.specifier
        assert specifier.operator == "==", f"{lock.name}: {head} is not an exact version"
        found[canonicalize_name(requirement.name)] = Pin(
            Version(specifier.version), requirement.marker, entry.count("--hash=sha256:")
        )
    return found


def requirements(*, extras: bool) -> list[Requirement]:
    """The project's requirements, its build backend's included, its extras if asked."""
    listed = [*PYPROJECT["project"]["dependencies"], *PYPROJECT["build-system"]["requires"]]
    if extras:
        for group in PYPROJECT["project"]["optional-dependencies"].values():
            listed += group
    return [Requirement(line) for line in listed]


@pytest.mark.timeout(10)
@pytest.mark.parametrize(("lock", "extras"), [(LOCK, True), (IMAGE_LOCK, False)])
def test_every_requirement_is_pinned_with_hashes(lock: Path, extras: bool) -> None:
    locked = pins(lock)
    for requirement in requirements(extras=extras):
        pin = locked.get(canonicalize_name(requirement.name))
        assert pin, f"{lock.name} does not pin {requirement.name}: {STALE}"
        assert requirement.specifier.contains(pin.version, prereleases=True), (
            f"{lock.name} pins {requirement.name} {pin.version}, outside {requirement}: {STALE}"
        )
    unhashed = [name for name, pin in locked.items() if pin.hashes == 0]
    assert not unhashed, f"{lock.name}: no hash for {unhashed}"


@pytest.mark.timeout(10)
def test_the_image_lock_is_the_full_lock_less_the_extras() -> None:
    full, image = pins(LOCK), pins(IMAGE_LOCK)
    differ = {name: (pin, full.get(name)) for name, pin in image.items() if full.get(name) != pin}
    assert not differ, f"the image would run other versions than make and CI: {differ}; {STALE}"
    for dev_tool in ("pytest", "ruff", "mypy"):
        assert dev_tool not in image


@pytest.mark.timeout(30)
def test_every_python_3_11_gets_what_each_locked_package_requires() -> None:
    # The image's Python may be an older 3.11 than this one (Debian's is 3.11.2), and some
    # requirements hold only there: redis wants async-timeout below 3.11.3.
    locked = pins(LOCK)
    missing = set()
    for name, pin in locked.items():
        if pin.marker and not pin.marker.evaluate():
            continue  # not for this Python, so not installed here to read from
        for line in metadata.requires(name) or []:
            requirement = Requirement(line)
            for python in ("3.11.0", platform.python_version()):
                env = {"python_full_version": python, "python_version": "3.11", "extra": ""}
                needed = requirement.marker is None or requirement.marker.evaluate(env)
                if needed and canonicalize_name(requirement.name) not in locked:
                    missing.add(f"{requirement} (for {name}, on Python {python})")
    assert not missing, f"{LOCK.name} lacks {sorted(missing)}: {STALE}"


@pytest.mark.timeout(10)
def test_make_the_image_and_ci_install_from_the_locks() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(
        r"^RUN pip install --require-hashes -r requirements/image\.txt", dockerfile, re.M
    )
    assert re.search(r"^RUN pip install --no-deps\b", dockerfile, re.M)
    makefile = (ROOT / "Makefile").read_text()
    assert "pip install --quiet --require-hashes -r $(LOCK)" in makefile
    assert "pip install --quiet --no-deps --no-build-isolation -e ." in makefile
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_every_package_on_disk_is_installed() -> None:
    """The image installs the project for real, not editable: a package (a folder with an
    __init__.py) missing from pyproject's list would be missing there, and only there."""
    listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
    on_disk = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for top in listed
        if "." not in top
        for init in (ROOT / top).rglob("__init__.py")
    }
    assert on_disk - listed == set(), "add them to [tool.setuptools] packages in pyproject.toml"
