"""Structure metrics of the pack: the longest node ``execute`` and library functions, tests per layer.

    python tools/code_metrics.py [--top 5]
"""
from __future__ import annotations

import argparse
import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def functions(folder: Path):
    """(lines, 'file:qualified name') of every function under ``folder``."""
    for path in sorted(folder.rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            for child in ast.iter_child_nodes(node):
                if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    owner = f"{node.name}." if isinstance(node, ast.ClassDef) else ""
                    yield child.end_lineno - child.lineno + 1, f"{path.relative_to(REPO)}:{owner}{child.name}"


def count_tests(folder: Path) -> int:
    return sum(1 for path in folder.rglob("test_*.py") for n in ast.walk(ast.parse(path.read_text()))
               if isinstance(n, ast.FunctionDef) and n.name.startswith("test_"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--top", type=int, default=5)
    args = ap.parse_args()
    executes = sorted((f for f in functions(REPO / "nodes") if f[1].endswith(".execute")), reverse=True)
    library = sorted(functions(REPO / "aniportrait_lib"), reverse=True)
    print("longest node execute:", *[f"  {n:4d}  {name}" for n, name in executes[: args.top]], sep="\n")
    print("longest library functions:", *[f"  {n:4d}  {name}" for n, name in library[: args.top]], sep="\n")
    for layer in ("lib", "nodes", "e2e"):
        print(f"test functions in tests/{layer}: {count_tests(REPO / 'tests' / layer)} (before parametrisation)")


if __name__ == "__main__":
    main()
