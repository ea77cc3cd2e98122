"""The project's own packaging metadata: every directory that ships is declared.

setuptools warns, for each data directory inside a package that it can import but that
is not in ``packages`` (``Package 'controller.fixes_catalogue' is absent…``), about 35
lines apiece on every install. This finds such a directory before an install does.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_directory_that_ships_is_a_declared_package() -> None:
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    declared = set(setuptools["packages"])
    where = {name: ROOT / path for name, path in setuptools.get("package-dir", {}).items()}
    undeclared = []

    def source(package: str) -> Path:
        top, _, rest = package.partition(".")
        base = where.get(top, ROOT / top)
        return base / rest.replace(".", "/") if rest else base

    for package in sorted(declared):
        for directory in (p for p in source(package).iterdir() if p.is_dir()):
            if not directory.name.isidentifier() or directory.name == "__pycache__":
                continue  # not importable, so setuptools has nothing to say about it
            if not any(f.is_file() and f.suffix != ".pyc" for f in directory.rglob("*")):
                continue
            name = f"{package}.{directory.name}"
            if name not in declared:
                undeclared.append(name)
    assert undeclared == [], f"add to [tool.setuptools] packages: {undeclared}"
    data = setuptools["package-data"]
    assert set(data) <= declared, "package-data for a package that is not declared"
