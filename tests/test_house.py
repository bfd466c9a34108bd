"""The house stays in rooms of a readable size: no module of facepipe/ over 300 lines,
no function over 50, the CLI's parser under 200 lines. And its floors hold: the import graph has
no cycle, the stages and the storage never import the run layer or the tools, the storage never
imports a stage -- a module's folder says which stage or layer it belongs to."""

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "facepipe"


def test_no_module_over_300_lines_and_no_function_over_50():
    long_files, long_functions = [], []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text()
        if text.count("\n") > 300:
            long_files.append(f"{path.relative_to(PACKAGE)}: {text.count(chr(10))}")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > 50:
                    long_functions.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name}: {n}")
    assert not long_files and not long_functions, (long_files, long_functions)
    assert (PACKAGE / "cli.py").read_text().count("\n") < 200


def test_the_readmes_layout_table_names_every_module_of_the_tree():
    """The README's layout table is drawn from the tree: each folder's row names its modules."""
    readme = (PACKAGE.parent / "README.md").read_text()
    table = readme[readme.index("| folder (modules) | role |") :].split("\n\n")[0]
    named = set()
    for row in table.splitlines()[2:]:
        cell = row.split("|")[1]
        folder = (re.findall(r"`([\w/]+/)`", cell) or [""])[0]
        named |= {folder + m for m in re.findall(r"`(\w+)`", cell)}
    modules = {
        str(p.relative_to(PACKAGE).with_suffix(""))
        for p in PACKAGE.rglob("*.py")
        if p.name not in ("__init__.py", "__main__.py")
    }
    assert not modules - named, sorted(modules - named)
    assert not named - modules, sorted(named - modules)


def _imports() -> dict[str, set[str]]:
    """Each facepipe module -> the facepipe modules it imports at module level (imports inside
    functions and under ``if TYPE_CHECKING`` are left out: they do not run at import)."""
    graph = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
        deps = set()
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name.startswith("facepipe")}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("facepipe"):
                for a in node.names:
                    sub = PACKAGE.parent / f"{node.module}.{a.name}".replace(".", "/")
                    deps.add(
                        f"{node.module}.{a.name}" if sub.with_suffix(".py").exists() or sub.is_dir() else node.module
                    )
        graph[name] = deps
    return graph


def test_the_import_graph_has_no_cycle():
    graph = _imports()
    state: dict[str, int] = {}

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for d in sorted(graph.get(m, ())):
            assert state.get(d) != 1, " -> ".join([*path[path.index(d) :], d]) if d in path else d
            if d in graph and not state.get(d):
                visit(d, [*path, d])
        state[m] = 2

    for m in sorted(graph):
        if not state.get(m):
            visit(m, [m])


def test_stages_and_storage_never_import_the_run_layer_or_the_tools():
    layer = lambda m: m.split(".")[1] if "." in m else ""  # noqa: E731
    below = {"stages": {"run", "tools", "jobs", "cli", "commands"}, "storage": {"run", "tools", "jobs", "stages"}}
    wrong = [f"{m} -> {d}" for m, deps in _imports().items() for d in deps if layer(d) in below.get(layer(m), set())]
    assert not wrong, wrong
