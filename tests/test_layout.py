"""The arrows between the gateway's parts, checked on every module in ``edge/``.

Two checks that agree: the import rules in pyproject.toml run by import-linter (``lint-imports``:
indirect imports too), and a walk over the import statements of every file here (direct imports,
lazy ones and those only for type checking included), which also holds the core to the standard
library's own list of modules and finds private names imported across modules.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EDGE = ROOT / "edge"


@dataclass(frozen=True)
class Imported:
    importer: str  # edge.sync.service
    module: str  # the module imported from, absolute: edge.config
    names: tuple[str, ...]  # what ``from module import ...`` takes; () for ``import module``
    line: int

    def __str__(self) -> str:
        if self.names:
            return f"{self.importer} (line {self.line}): from {self.module} import " + (
                ", ".join(self.names)
            )
        return f"{self.importer} (line {self.line}): import {self.module}"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> Iterator[Imported]:
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Imported(name, alias.name, (), node.lineno)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from .x import y
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            yield Imported(name, module, tuple(a.name for a in node.names), node.lineno)


def all_imports() -> list[Imported]:
    return [imp for path in sorted(EDGE.rglob("*.py")) for imp in imports_of(path)]


def under(module: str, *packages: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


def test_the_walk_sees_every_part_of_the_gateway() -> None:
    importers = {imp.importer for imp in all_imports()}
    parts = ["edge.domain.core", "edge.sync.service", "edge.store.store", "edge.panel.api",
             "edge.sources.opcua", "edge.operator.buttons", "edge.cli", "edge.config"]  # fmt: skip
    for part in parts:
        assert part in importers, f"{part} was not walked"


def test_the_core_imports_only_the_standard_library_and_itself() -> None:
    stdlib = sys.stdlib_module_names | {"__future__"}
    bad = [
        str(imp)
        for imp in all_imports()
        if under(imp.importer, "edge.domain")
        and not under(imp.module, "edge.domain")
        and imp.module.partition(".")[0] not in stdlib
    ]
    assert not bad, "edge/domain may import only the standard library and edge.domain:\n" + (
        "\n".join(bad)
    )


def test_nothing_in_edge_imports_the_simulators() -> None:
    bad = [str(imp) for imp in all_imports() if under(imp.module, "simulators")]
    assert not bad, "edge/ must not import the simulators:\n" + "\n".join(bad)


def test_only_the_demo_command_names_the_simulators_and_only_to_look_the_demo_up() -> None:
    """``edge demo`` finds the demo by name when it runs; no other code in edge/ reaches for
    the simulators that way."""
    named: list[str] = []
    for path in sorted(EDGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and node.value.startswith("simulators")
                and not node.value.startswith("simulators ")
            ):
                named.append(f"{module_name(path)}: {node.value!r}")
    assert set(named) == {"edge.cli: 'simulators.demo'", "edge.cli: 'simulators'"}, named


@pytest.mark.parametrize("adapter", ["edge.sources", "edge.operator", "edge.sync"])
def test_the_adapters_do_not_import_the_panel(adapter: str) -> None:
    bad = [
        str(imp)
        for imp in all_imports()
        if under(imp.importer, adapter) and under(imp.module, "edge.panel")
    ]
    assert not bad, f"{adapter} must not import edge.panel:\n" + "\n".join(bad)


def test_the_panel_does_not_import_the_sources() -> None:
    bad = [
        str(imp)
        for imp in all_imports()
        if under(imp.importer, "edge.panel") and under(imp.module, "edge.sources")
    ]
    assert not bad, "edge.panel must not import edge.sources:\n" + "\n".join(bad)


def test_the_config_metrics_and_ops_do_not_import_upwards() -> None:
    rules = {
        "edge.config": ("edge.panel", "edge.sync", "edge.sources", "edge.operator", "edge.cli"),
        "edge.metrics": ("edge.sync", "edge.panel", "edge.sources", "edge.operator"),
        "edge.ops": ("edge.cli",),
    }
    bad = [
        str(imp)
        for imp in all_imports()
        if imp.importer in rules and under(imp.module, *rules[imp.importer])
    ]
    assert not bad, "\n".join(bad)


def private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def test_no_private_name_is_imported_across_modules() -> None:
    bad = [
        str(imp)
        for imp in all_imports()
        if under(imp.module, "edge")
        and (
            any(private(n) for n in imp.names)
            or any(private(part) for part in imp.module.split("."))
        )
    ]
    assert not bad, "a private name (leading underscore) imported from another module:\n" + (
        "\n".join(bad)
    )


def test_the_import_rules_hold() -> None:
    """``lint-imports`` with the contracts in pyproject.toml, as scripts/test runs it."""
    result = subprocess.run(
        [sys.executable, "-c", "from importlinter.cli import lint_imports_command as c; c()",
         "--no-cache", "--no-logo"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout, result.stdout
