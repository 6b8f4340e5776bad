"""The shape of the code: core/ never imports streamlit, imports go one way counting every import (inside functions
too), and the dashboard's first page loads no torch."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# core's parts, lowest first: a module imports only from its own part or from parts before it. The small shared
# modules at the top of core/ ("") come first. A package's __main__ (its command line) is an entry point, like
# app.py and the pages: it may use any part, and no module imports it.
LAYERS = ["", "data", "net", "runs", "fix", "inspect", "ship", "train", "sweep"]


def module_name(path: Path) -> str:
    name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    return name.removesuffix(".__init__")


def project_modules() -> dict[str, Path]:
    paths = [*ROOT.glob("*.py"), *(ROOT / "core").rglob("*.py"), *(ROOT / "pages").rglob("*.py")]
    return {module_name(path): path for path in paths}


def imported_modules(path: Path, me: str, known: set[str]) -> set[str]:
    """Every project module `path` imports, at load time or inside a function; not what only type checkers see."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    type_only = {id(node) for block in ast.walk(tree) if isinstance(block, ast.If)
                 and "TYPE_CHECKING" in ast.unparse(block.test) for stmt in block.body for node in ast.walk(stmt)}
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package, up level - 1
                parts = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, *([base] if base else [])])
            found |= {base, *(f"{base}.{alias.name}" for alias in node.names)}
    return {name for name in found if name in known and name != me}


def import_graph() -> dict[str, set[str]]:
    modules = project_modules()
    return {name: imported_modules(path, name, set(modules)) for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The groups of modules that reach each other (Tarjan's strongly connected components of two or more)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in graph[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            group = []
            while not group or group[-1] != node:
                group.append(stack.pop())
                on_stack.discard(group[-1])
            if len(group) > 1:
                found.append(sorted(group))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def layer_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (ROOT / "core" / parts[-1]).is_dir() else ""


def test_core_never_imports_streamlit():
    modules = ", ".join(name for name in project_modules()
                        if name.startswith("core.") and not name.endswith("__main__"))
    code = f"import sys, {modules}; sys.exit('streamlit' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0


def test_no_modules_import_each_other_counting_imports_inside_functions():
    assert cycles(import_graph()) == []


def test_the_cycle_finder_sees_an_import_inside_a_function(tmp_path):
    (tmp_path / "a.py").write_text("import b\n")
    (tmp_path / "b.py").write_text("def later():\n    from a import thing\n")
    graph = {name: imported_modules(tmp_path / f"{name}.py", name, {"a", "b"}) for name in ("a", "b")}
    assert cycles(graph) == [["a", "b"]]


def test_core_parts_import_only_their_own_part_and_the_parts_below():
    wrong = []
    for module, imported in import_graph().items():
        if not module.startswith("core.") or module.endswith(".__main__"):
            continue
        assert layer_of(module) in LAYERS, f"{module} is in no part of core/ that this test knows"
        wrong += [f"{module} -> {other}" for other in imported if other.startswith("pages") or other.endswith(
            ".__main__") or (other.startswith("core.") and LAYERS.index(layer_of(other)) > LAYERS.index(
                layer_of(module)))]
    assert wrong == []


def test_core_packages_load_nothing_heavy_so_the_first_page_draws_before_torch_loads():
    packages = ", ".join(name for name in project_modules() if name.startswith("core") and
                         (ROOT / name.replace(".", "/") / "__init__.py").exists())
    code = (f"import sys, {packages}, core.config, core.data.sources, core.runs.settings; "
            "sys.exit(bool({'torch', 'numpy', 'streamlit'} & set(sys.modules)))")
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0


def test_without_settings_runs_and_data_sit_beside_app_py_and_runs_start_there(monkeypatch):
    """The folders every part of core/ names by its own place in the tree (a move of a module moves them)."""
    from core.data.archive import data_root
    from core.runs import store

    monkeypatch.delenv("STUDIO_RUNS_DIR", raising=False)
    monkeypatch.delenv("STUDIO_DATA_DIR", raising=False)
    assert store.runs_root() == ROOT / "runs" and data_root() == ROOT / "data"
    assert store.PROJECT_ROOT == ROOT and (store.PROJECT_ROOT / "app.py").exists()
