"""The tests' own support stays where STYLE.md puts it: helpers in tests/support.py, never
imported from a conftest (pytest loads those itself, as plugins), and factories reached
from async tests through the make_* fixtures, not sync_to_async(SomeFactory) in each test.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.support import ROOT


def python_files(*folders: str) -> list[Path]:
    return sorted(path for folder in folders for path in (ROOT / folder).rglob("*.py"))


def conftest_imports(tree: ast.AST) -> list[int]:
    """Lines that import a conftest module or a name from one."""
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            modules = [module] + [f"{module}.{alias.name}" for alias in node.names]
        else:
            continue
        if any("conftest" in module.split(".") for module in modules):
            lines.append(node.lineno)
    return lines


def wrapped_factories(tree: ast.AST) -> list[int]:
    """Lines that hand a factory class (or its method) to sync_to_async or its like."""
    lines = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and node.args):
            continue
        function = node.func
        name = function.attr if isinstance(function, ast.Attribute) else getattr(function, "id", "")
        if not name.endswith("sync_to_async"):
            continue
        named = {
            part.id if isinstance(part, ast.Name) else part.attr
            for part in ast.walk(node.args[0])
            if isinstance(part, ast.Name | ast.Attribute)
        }
        if any(each.endswith("Factory") for each in named):
            lines.append(node.lineno)
    return lines


def problems(files: list[Path], check) -> list[str]:
    found = []
    for file in files:
        for line in check(ast.parse(file.read_text(), str(file))):
            found.append(f"{file.relative_to(ROOT)}:{line}")
    return found


def test_no_module_imports_from_a_conftest():
    assert problems(python_files("tests", "scripts"), conftest_imports) == []


def test_no_test_wraps_a_factory_in_sync_to_async():
    assert problems(python_files("tests"), wrapped_factories) == []


def test_the_checks_find_a_conftest_import_and_a_wrapped_factory():
    source = ast.parse(
        "from tests.conftest import eventually\n"
        "from tests import conftest\n"
        "import tests.e2e.conftest\n"
        "from .conftest import launch\n"
        "from tests.support import eventually\n"
        "async def test_it(make_session):\n"
        "    from asgiref.sync import sync_to_async\n"
        "    await sync_to_async(VoiceSessionFactory)(status='active')\n"
        "    await asgiref.sync.sync_to_async(factories.ApiKeyFactory.create)()\n"
        "    await database_sync_to_async(lambda: ConversationItemFactory())()\n"
        "    await sync_to_async(breakers.reset)(breaker)\n"
        "    await make_session(status='active')\n"
    )

    assert conftest_imports(source) == [1, 2, 3, 4]
    assert wrapped_factories(source) == [8, 9, 10]
