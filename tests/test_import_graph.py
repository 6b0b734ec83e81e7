"""The packages' modules import each other without a cycle (module-level imports, type-only
ones included): each module can be read, and tested, after the ones it builds on."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = {"pixeltext_render": REPO / "render" / "src", "pixeltext_train": REPO / "train" / "src"}


def module_imports() -> dict[str, set[str]]:
    """Each module of both packages with the modules of both packages it imports at module level."""
    modules = {}
    for package, root in PACKAGES.items():
        for path in (root / package).rglob("*.py"):
            parts = path.relative_to(root).with_suffix("").parts
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        statements = [node for node in tree.body if isinstance(node, ast.Import | ast.ImportFrom)]
        for node in tree.body:  # ``if TYPE_CHECKING:`` blocks are imports too
            if isinstance(node, ast.If):
                statements += [n for n in node.body if isinstance(n, ast.Import | ast.ImportFrom)]
        found = set()
        for node in statements:
            targets = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            if isinstance(node, ast.ImportFrom) and node.module:
                targets += [f"{node.module}.{a.name}" for a in node.names]
            found |= {t for t in targets if t in modules and t != name}
        graph[name] = found
    return graph


def test_no_module_imports_itself_through_others():
    graph = module_imports()
    assert len(graph) > 40  # both packages were read
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> None:
        if name in path:
            raise AssertionError("import cycle: " + " -> ".join([*path[path.index(name) :], name]))
        if name in done:
            return
        for imported in sorted(graph[name]):
            visit(imported, [*path, name])
        done.add(name)

    for name in sorted(graph):
        visit(name, [])
