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


def _is_type_checking(test: ast.expr) -> bool:
    return ast.unparse(test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING")


def _type_only_nodes(tree: ast.AST) -> set[int]:
    """Nodes that run only under a type checker: the body of ``if TYPE_CHECKING:`` (never its else),
    the else of ``if not TYPE_CHECKING:``."""
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.If):
            continue
        if _is_type_checking(node.test):
            branch = node.body
        elif (
            isinstance(node.test, ast.UnaryOp)
            and isinstance(node.test.op, ast.Not)
            and _is_type_checking(node.test.operand)
        ):
            branch = node.orelse
        else:
            continue
        skipped |= {id(n) for stmt in branch for n in ast.walk(stmt)}
    return skipped


def _dotted_targets(node: ast.AST, path: Path) -> list[str]:
    """The ``selfguide_hf.x`` names one node imports: absolute, relative, or through importlib."""
    if isinstance(node, ast.ImportFrom):
        if node.level:  # relative: resolve against the file's own package
            base = list(path.relative_to(ROOT).with_suffix("").parts[: -node.level])
            module = ".".join(base + ([node.module] if node.module else []))
        else:
            module = node.module or ""
        if module == "selfguide_hf":
            return [f"selfguide_hf.{a.name}" for a in node.names]
        return [module]
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
        name = ast.unparse(node.func)
        if name.endswith("import_module") or name == "__import__":
            return [str(node.args[0].value)]
    return []


def imports_of(path: Path, type_hints: bool = False) -> set[str]:
    """The package modules ``path`` imports (top level or inside functions); TYPE_CHECKING blocks if asked."""
    tree = ast.parse(path.read_text())
    skipped = set() if type_hints else _type_only_nodes(tree)
    names = package_modules()
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        for dotted in _dotted_targets(node, path):
            parts = dotted.split(".")
            if parts[0] != "selfguide_hf" or len(parts) < 2:
                continue
            name = "metrics/" if parts[1] == "metrics" else f"{parts[1]}.py"
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


def test_the_checker_sees_relative_importlib_and_not_type_checking_imports(tmp_path: Path) -> None:
    folder = tmp_path / "selfguide_hf"  # a copy of labels.py placed as the package's own file
    cases = {
        "relative": "from .pipeline import run_all\n",
        "relative package": "from . import pipeline\n",
        "importlib": "import importlib\nimportlib.import_module('selfguide_hf.pipeline')\n",
        "not TYPE_CHECKING": "from typing import TYPE_CHECKING\nif not TYPE_CHECKING:\n    import selfguide_hf.pipeline\n",
        "else of TYPE_CHECKING": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    pass\nelse:\n    from selfguide_hf import pipeline\n",
    }
    global ROOT
    saved = ROOT
    try:
        ROOT = tmp_path
        for name, code in cases.items():
            folder.mkdir(exist_ok=True)
            module = folder / "labels.py"
            module.write_text(code)
            assert "pipeline.py" in imports_of(module), name
        module.write_text(
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from selfguide_hf import pipeline\n"
        )
        assert "pipeline.py" not in imports_of(module)  # a type hint only
    finally:
        ROOT = saved


# The fronts: thin, over the pipeline, the settings and the errors; nothing else of the package.
FRONTS = {PACKAGE / "cli.py", ROOT / "recipes" / "sft.py"}
FRONT_MAY_IMPORT = {"pipeline.py", "settings.py", "settings_parser.py", "errors.py"}


def test_the_fronts_import_only_the_pipeline_the_settings_and_the_errors() -> None:
    for front in sorted(FRONTS):
        extra = imports_of(front, type_hints=True) - FRONT_MAY_IMPORT
        assert not extra, f"{front.relative_to(ROOT)} imports {sorted(extra)}"
