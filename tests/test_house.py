"""The house stays in rooms of a readable size: no module of facepipe/ over 300 lines,
no function over 50, the CLI's parser under 200 lines."""

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
