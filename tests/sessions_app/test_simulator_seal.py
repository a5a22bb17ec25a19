"""The simulator is sealed: it imports nothing of the product, and the product (with its
scripts and tests) reaches it only through the package's public names."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SEAM = "sessions_app.simulator"
SIMULATOR = ROOT / "sessions_app" / "simulator"
PRODUCT_PACKAGES = ("sessions_app", "tools_app", "ops_app", "voiceplatform")
PRODUCT_FILES = [ROOT / "manage.py"] + [
    path
    for top in (*PRODUCT_PACKAGES, "scripts", "tests")
    for path in sorted((ROOT / top).rglob("*.py"))
    if SIMULATOR not in path.parents
]
# A dotted path in a string: include("..."), import_module("..."), "module:attribute".
DOTTED = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*(:[A-Za-z_]\w*)?")


def module_of(path: Path) -> tuple[str, bool]:
    """The dotted module name of a file, and whether it is a package's __init__."""
    parts = path.relative_to(ROOT).with_suffix("").parts
    is_package = parts[-1] == "__init__"
    return ".".join(parts[:-1] if is_package else parts), is_package


def imports(source: str, module: str, is_package: bool):
    """(line, absolute module, imported names, relative level) for each import; relative
    imports are resolved against the module's package."""
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, [], 0
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
                if package.count(".") < node.level - 1:
                    base = ""  # above the top-level package: resolves to nothing valid
            yield node.lineno, base, [alias.name for alias in node.names], node.level


def dotted_strings(source: str):
    for node in ast.walk(ast.parse(source)):
        text = node.value if isinstance(node, ast.Constant) else None
        if isinstance(text, str) and DOTTED.fullmatch(text):
            yield node.lineno, text


def is_product(name: str) -> bool:
    return name.partition(".")[0].partition(":")[0] in PRODUCT_PACKAGES


def simulator_leaks(source: str, module: str, is_package: bool) -> list[str]:
    """Imports of product modules. Its own modules are imported relatively, so the
    package does not depend on where it sits."""
    leaks = []
    for line, name, _, level in imports(source, module, is_package):
        inside = name == SEAM or name.startswith(SEAM + ".")
        if (level == 0 and is_product(name)) or (level and not inside):
            leaks.append(f"{module}:{line} imports {name or 'beyond the top package'}")
    leaks += [
        f"{module}:{line} names {value}"
        for line, value in dotted_strings(source)
        if is_product(value)
    ]
    return leaks


def seam_bypasses(source: str, module: str, is_package: bool, public: set[str]) -> list[str]:
    """Reaches into the simulator past its package's public names."""
    bypasses = []
    for line, name, names, _ in imports(source, module, is_package):
        private = set(names) - public if name == SEAM else set()
        if name.startswith(SEAM + ".") or private:
            bypasses.append(f"{module}:{line} imports {name} {sorted(private) or ''}".rstrip())
    bypasses += [
        f"{module}:{line} names {value}"
        for line, value in dotted_strings(source)
        if value.startswith(SEAM + ".")
        or (value.startswith(SEAM + ":") and value.partition(":")[2] not in public)
    ]
    return bypasses


def public_names() -> set[str]:
    tree = ast.parse((SIMULATOR / "__init__.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(target, ast.Name) and target.id == "__all__" for target in node.targets
        ):
            return set(ast.literal_eval(node.value))
    raise AssertionError("sessions_app/simulator/__init__.py declares no __all__")


def test_the_simulator_imports_nothing_of_the_product():
    leaks = [
        leak
        for path in sorted(SIMULATOR.rglob("*.py"))
        for leak in simulator_leaks(path.read_text(), *module_of(path))
    ]

    assert leaks == []


def test_the_product_reaches_the_simulator_only_through_its_package():
    public = public_names()
    bypasses = [
        bypass
        for path in PRODUCT_FILES
        for bypass in seam_bypasses(path.read_text(), *module_of(path), public)
    ]

    assert len(PRODUCT_FILES) > 50  # the walk found the code base
    assert bypasses == []


def test_each_public_name_is_documented_in_the_package_docstring():
    docstring = ast.get_docstring(ast.parse((SIMULATOR / "__init__.py").read_text())) or ""

    assert [name for name in sorted(public_names()) if f"`{name}`" not in docstring] == []


def test_the_checks_catch_a_leak_and_a_bypass():
    inside = (SEAM + ".views", False)
    leaks = [
        "from sessions_app.models import VoiceSession",
        "import voiceplatform.settings",
        "from sessions_app.simulator import state",
        "from .. import probe",
        "settings_module = 'voiceplatform.settings'",
    ]
    sealed = ["from . import peer", "from .state import STATE", "from django.conf import settings"]
    public = {"urlpatterns", "application"}
    outside = ("voiceplatform.urls", False)
    bypasses = [
        "from sessions_app.simulator.views import sign_webhook",
        "from sessions_app.simulator import views",
        "import sessions_app.simulator.peer",
        "include('sessions_app.simulator.urls')",
        "target = 'sessions_app.simulator.asgi:application'",
    ]
    through_the_seam = [
        "from sessions_app.simulator import urlpatterns",
        "from sessions_app import simulator",
        "include('sessions_app.simulator')",
        "target = 'sessions_app.simulator:application'",
    ]

    assert all(simulator_leaks(source, *inside) for source in leaks)
    assert not any(simulator_leaks(source, *inside) for source in sealed)
    assert all(seam_bypasses(source, *outside, public) for source in bypasses)
    assert not any(seam_bypasses(source, *outside, public) for source in through_the_seam)
