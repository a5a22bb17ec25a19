"""Every third-party package the code imports is declared in pyproject.toml.

The product's imports must be runtime dependencies; tests and scripts may also use the
dev extra. A package that arrives only through another one (asgiref through Django)
must still be declared when imported directly: its version would otherwise move with
whatever pulls it in.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

from tests.support import ROOT

PRODUCT = ["voiceplatform", "sessions_app", "tools_app", "ops_app", "manage.py"]
TESTS_AND_SCRIPTS = ["tests", "scripts"]


def normalized(distribution: str) -> str:
    """The distribution's name as PyPI compares names (PEP 503)."""
    return re.sub(r"[-_.]+", "-", distribution).lower()


def declared(*groups: str) -> set[str]:
    """Distribution names from pyproject.toml: "dependencies" or an optional extra."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = [
        requirement
        for group in groups
        for requirement in (
            project["dependencies"]
            if group == "dependencies"
            else project["optional-dependencies"][group]
        )
    ]
    return {normalized(re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", r).group()) for r in requirements}


def python_files(paths: list[Path]) -> list[Path]:
    return sorted(
        file for path in paths for file in ([path] if path.is_file() else path.rglob("*.py"))
    )


def imported_names(file: Path) -> set[str]:
    """Top-level names of absolute imports (relative ones are the file's own package)."""
    names = set()
    for node in ast.walk(ast.parse(file.read_text(), filename=str(file))):
        if isinstance(node, ast.Import):
            names |= {alias.name.partition(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.partition(".")[0])
    return names


def third_party_imports(paths: list[Path]) -> dict[str, Path]:
    """Each imported third-party name, with the first file importing it."""
    found: dict[str, Path] = {}
    for file in python_files(paths):
        for name in imported_names(file):
            first_party = (ROOT / name).is_dir() or (ROOT / f"{name}.py").is_file()
            if name not in sys.stdlib_module_names and not first_party:
                found.setdefault(name, file)
    return found


def undeclared(paths: list[Path], allowed: set[str]) -> list[str]:
    """One line per imported name whose distribution is not among those allowed."""
    distributions = packages_distributions()
    problems = []
    for name, file in sorted(third_party_imports(paths).items()):
        candidates = {normalized(d) for d in distributions.get(name, [])}
        if not candidates & allowed:
            source = ", ".join(sorted(candidates)) or "no installed distribution"
            where = file.relative_to(ROOT) if file.is_relative_to(ROOT) else file
            problems.append(f"{name} ({source}), imported in {where}")
    return problems


def test_the_product_declares_every_package_it_imports():
    assert undeclared([ROOT / name for name in PRODUCT], declared("dependencies")) == []


def test_tests_and_scripts_declare_every_package_they_import():
    allowed = declared("dependencies", "dev")

    assert undeclared([ROOT / name for name in TESTS_AND_SCRIPTS], allowed) == []


def test_it_names_an_import_that_is_not_declared(tmp_path):
    module = tmp_path / "module.py"
    module.write_text("import json\nimport httpx2\nfrom django.conf import settings\n")

    problems = undeclared([tmp_path], {"django"})

    assert problems == [f"httpx2 (httpx2), imported in {module}"]
