"""docs/ARCHITECTURE.md's import table, enforced: a module imports only the package modules its row names.

The rows are also an order: every module a row names must be listed above it,
so dependencies point one way. Imports under ``if TYPE_CHECKING:`` are for
type hints only and are not counted.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "selfguide_hf"
DOC = ROOT / "docs" / "ARCHITECTURE.md"


def module_of(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return "metrics/" if parts[0] == "metrics" else f"{parts[0]}.py"


def package_modules() -> set[str]:
    return {module_of(p) for p in PACKAGE.rglob("*.py")}


def table() -> list[tuple[str, set[str]]]:
    """(module, the package modules it may import) in the order of the table; other names are ignored."""
    names = package_modules()
    rows = []
    for line in DOC.read_text().splitlines():
        match = re.match(r"\| `([\w/.]+)` \|.*\| ([^|]*) \|$", line)
        if match:
            words = {word.strip() for word in match.group(2).split(",")}
            allowed = {f"{w}.py" for w in words} | {f"{w}/" for w in words}
            rows.append((match.group(1), allowed & names))
    return rows


def imports_of(path: Path, type_hints: bool = False) -> set[str]:
    """The package modules ``path`` imports (top level or inside functions); TYPE_CHECKING blocks if asked."""
    tree = ast.parse(path.read_text())
    skipped = {
        id(n)
        for node in ast.walk(tree)
        if not type_hints and isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for n in ast.walk(node)
    }
    names = package_modules()
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        targets: list[str] = []
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "selfguide_hf":
            parts = node.module.split(".")
            targets = [parts[1]] if len(parts) > 1 else [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            targets = [a.name.split(".")[1] for a in node.names if a.name.startswith("selfguide_hf.")]
        for target in targets:
            name = "metrics/" if target == "metrics" else f"{target}.py"
            found.add(name if name in names else "__init__.py")  # `from selfguide_hf import __version__`
    return found


def test_every_module_has_a_row() -> None:
    listed = [name for name, _ in table()]
    assert len(listed) == len(set(listed)), "a module is listed twice"
    assert set(listed) == package_modules()


def test_rows_only_name_modules_above_them() -> None:
    above: set[str] = set()
    for module, allowed in table():
        assert allowed <= above, f"{module} may import {sorted(allowed - above)}, listed below it"
        above.add(module)


def test_imports_follow_the_table() -> None:
    names = package_modules()
    rules = dict(table())
    broken = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = module_of(path)
        extra = imports_of(path) - rules[module] - {module}
        extra = {e for e in extra if e in names}
        if extra:
            broken.append(f"{path.relative_to(ROOT)} imports {sorted(extra)}, not in its row of {DOC.name}")
    assert not broken, "\n".join(broken)


def test_type_hints_point_up_the_table_too() -> None:
    """A type-only import may skip its row (it loads nothing), but never import a module listed below."""
    order = [name for name, _ in table()]
    broken = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = module_of(path)
        below = {
            m
            for m in imports_of(path, type_hints=True)
            if m in order and order.index(m) > order.index(module)
        }
        if below:
            broken.append(
                f"{path.relative_to(ROOT)} imports {sorted(below)} (listed below it) for type hints"
            )
    assert not broken, "\n".join(broken)


def test_the_checker_sees_an_import_going_down_the_table(tmp_path: Path) -> None:
    source = (PACKAGE / "labels.py").read_text()
    assert "pipeline.py" not in imports_of(PACKAGE / "labels.py")
    broken = tmp_path / "labels.py"
    broken.write_text(source + "\n\ndef late():\n    from selfguide_hf.pipeline import run_all\n")
    assert "pipeline.py" in imports_of(broken)
