"""The committed lock (``requirements.lock``) is what ``make test`` installs: it must pin every
dependency pyproject.toml names, each at a version inside pyproject's range, and nothing twice.

A dependency added to pyproject.toml without ``make lock`` fails here, not on a fresh clone."""

from __future__ import annotations

from pathlib import Path

import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]


def locked() -> dict[str, Version]:
    pins: dict[str, Version] = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name, sep, version = line.partition("==")
        assert sep, f"requirements.lock: '{line}' is not an exact pin (name==version)"
        key = canonicalize_name(name)
        assert key not in pins, f"requirements.lock pins {name} twice"
        pins[key] = Version(version)
    return pins


def declared() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        reqs.extend(extra)
    return [Requirement(r) for r in reqs]


def test_lock_pins_every_declared_dependency_inside_its_range():
    pins = locked()
    for req in declared():
        if req.marker is not None and not req.marker.evaluate():
            continue  # e.g. tomli on Python < 3.11
        key = canonicalize_name(req.name)
        assert key in pins, f"{req.name} is in pyproject.toml but not in requirements.lock:" \
                            " run `make lock`"
        assert req.specifier.contains(pins[key], prereleases=True), (
            f"requirements.lock pins {req.name}=={pins[key]}, outside pyproject's '{req}'")


def test_makefile_torch_pin_matches_the_lock():
    makefile = (ROOT / "Makefile").read_text()
    torch_line = next(ln for ln in makefile.splitlines() if ln.startswith("TORCH"))
    assert torch_line.split(":=")[1].strip() == f"torch=={locked()['torch']}"
