"""The shape of the codebase, checked from the source (docs/ARCHITECTURE.md).

- no import cycle among the modules of ``vtr_qdrant``, ``ray_jobs`` and ``onnx_export``, counting
  imports inside functions and under ``TYPE_CHECKING``;
- ``vtr_qdrant`` never names ``ray_jobs`` or ``onnx_export`` outside ``vtr_qdrant/cli``, and each of
  its packages imports only the packages below it (the table in docs/ARCHITECTURE.md);
- no module over 400 lines, no function over 80 lines (docstring not counted) without a ``#``
  comment at its top saying why;
- no block of six or more identical lines in two modules.
"""

from __future__ import annotations

import ast
import hashlib
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("vtr_qdrant", "ray_jobs", "onnx_export")
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80
MIN_COPY_LINES = 6

# vtr_qdrant's layers: a package (or top-level module) may import itself and what is listed here.
BASE = {"errors", "_optional", "_atomic", "_compat"}
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "_optional": {"errors"},
    "_atomic": set(),
    "_compat": set(),
    "model": BASE,
    "video": BASE,
    "store": BASE | {"video"},
    "search": BASE | {"model", "store"},
    "ingest": BASE | {"model", "video", "store"},
    "collection": BASE | {"model", "video", "store", "search", "ingest"},
    "aio": BASE | {"store", "collection"},
    "integrations": BASE | {"model", "store", "search", "collection", "aio"},
    "eval": BASE | {"model", "store", "search", "collection"},
    "synthetic": BASE | {"video", "eval"},
    "serve": BASE | {"video", "store", "search", "collection", "aio", "integrations"},
    "cli": BASE | {"model", "video", "store", "search", "ingest", "collection", "eval", "synthetic", "serve"},
}


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """Every module of ours that ``name`` imports, anywhere in its source."""
    is_pkg = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_pkg else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in MODULES else mod for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in MODULES:  # `import a.b.c` of a non-module attribute: its module
                t = t.rpartition(".")[0]
            if t and t != name:
                found.add(t)
    return found


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_graph_sees_our_imports() -> None:
    # guards the checks below against a parser that finds nothing
    assert "vtr_qdrant.store.plan" in GRAPH["vtr_qdrant.store.qdrant"]
    assert "vtr_qdrant.store.points" in GRAPH["vtr_qdrant.store.plan"]
    assert "vtr_qdrant.collection" in GRAPH["vtr_qdrant.cli.search"]  # an import inside a function
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycles() -> None:
    assert _cycles(GRAPH) == []


def test_library_never_names_ray_jobs_or_onnx_export_outside_cli() -> None:
    bad = [
        f"{src} -> {dst}"
        for src, dsts in GRAPH.items()
        if src.startswith("vtr_qdrant") and not src.startswith("vtr_qdrant.cli")
        for dst in dsts
        if dst.split(".")[0] in ("ray_jobs", "onnx_export")
    ]
    assert bad == []


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "vtr_qdrant" and len(parts) > 1 else None


def test_packages_import_only_the_layers_below() -> None:
    bad = []
    for src, dsts in GRAPH.items():
        layer = _layer(src)
        if layer is None:  # the package's own __init__ (lazy names for type checkers) and other packages
            continue
        assert layer in ALLOWED, f"{src}: add package {layer!r} to ALLOWED and docs/ARCHITECTURE.md"
        for dst in dsts:
            other = _layer(dst)
            if dst == "vtr_qdrant" or (other is not None and other != layer and other not in ALLOWED[layer]):
                bad.append(f"{src} -> {dst}")
    assert bad == []


def test_module_sizes() -> None:
    big = {
        str(p.relative_to(ROOT)): n
        for p in MODULES.values()
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES
    }
    assert big == {}


def _has_reason(lines: list[str], fn: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    """A ``#`` comment right after the signature or the docstring."""
    body = fn.body
    start = body[0].end_lineno if isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) else fn.body[0].lineno - 1
    if start is None:
        return False
    for line in lines[start : start + 2]:
        s = line.strip()
        if s.startswith("#"):
            return True
        if s:
            return False
    return False


def _docstring_lines(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    first = fn.body[0]
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
        return (first.end_lineno or first.lineno) - first.lineno + 1
    return 0


def test_function_sizes() -> None:
    long = []
    for path in MODULES.values():
        text = path.read_text(encoding="utf-8")
        lines = text.splitlines()
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = (node.end_lineno or node.lineno) - node.lineno + 1 - _docstring_lines(node)
                if n > MAX_FUNCTION_LINES and not _has_reason(lines, node):
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({n} lines)")
    assert long == []


def _code_lines(path: Path) -> list[tuple[int, str]]:
    out = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        s = line.strip()
        if len(s) < 4 or s.startswith(("import ", "from ", "#", '"""', "@")) or s.strip("()[]{},:") == "":
            continue
        out.append((i, s))
    return out


def test_no_copied_blocks_between_modules() -> None:
    seen: dict[str, tuple[str, int]] = {}
    copies = defaultdict(set)
    for name, path in MODULES.items():
        lines = _code_lines(path)
        for k in range(len(lines) - MIN_COPY_LINES + 1):
            window = "\n".join(s for _, s in lines[k : k + MIN_COPY_LINES])
            h = hashlib.sha1(window.encode()).hexdigest()
            first = seen.setdefault(h, (name, lines[k][0]))
            if first[0] != name:
                copies[(first[0], name)].add(f"{first[0]}:{first[1]} ~ {name}:{lines[k][0]}")
    assert {pair: sorted(v)[0] for pair, v in copies.items()} == {}


@pytest.mark.parametrize("name", ["vtr_qdrant.collection", "vtr_qdrant.store.edge", "vtr_qdrant.search.stage_two"])
def test_known_modules_are_scanned(name: str) -> None:
    assert name in MODULES and GRAPH[name]
