"""The pack's import graph read from its source with ``ast`` (nothing is imported or run).

A file's module name is its dotted path from the repository root (``aniportrait_lib.face.tracking``,
``nodes.sampling``); files of ``scripts/`` and ``tools/``, which run with their folder on ``sys.path``,
are named by their stem. Relative imports are resolved against the file's package, and imports inside
functions count like those at the top.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path

from support.paths import REPO_ROOT


@dataclass
class Module:
    name: str
    path: Path
    package: tuple[str, ...]  #: the package relative imports start from
    tree: ast.Module = field(repr=False)

    @property
    def is_package(self) -> bool:
        return self.path.name == "__init__.py"


def read_modules(*folders: str, flat: tuple[str, ...] = ()) -> dict[str, Module]:
    """Every ``.py`` file under ``folders`` (named from the repository root) and under ``flat`` (named by stem)."""
    modules: dict[str, Module] = {}
    for folder, dotted in [(f, True) for f in folders] + [(f, False) for f in flat]:
        for path in sorted((REPO_ROOT / folder).rglob("*.py")):
            parts = path.relative_to(REPO_ROOT).with_suffix("").parts if dotted else (path.stem,)
            package = parts[:-1]
            if parts[-1] == "__init__":
                parts = package = parts[:-1]
            name = ".".join(parts)
            modules[name] = Module(name, path, tuple(package), ast.parse(path.read_text(), str(path)))
    return modules


def _source(module: Module, node: ast.ImportFrom) -> str:
    """The dotted module a ``from ... import`` reads from, relative levels resolved."""
    if not node.level:
        return node.module or ""
    base = list(module.package[: len(module.package) - node.level + 1])
    return ".".join(base + ([node.module] if node.module else []))


def _aliases(module: Module, known: dict[str, Module], *, top_level_only: bool = False) -> dict[str, str]:
    """Local name -> the dotted module or ``module.symbol`` it stands for, from every import of ``module``."""
    nodes = module.tree.body if top_level_only else ast.walk(module.tree)
    names: dict[str, str] = {}
    for node in nodes:
        if isinstance(node, ast.Import):
            for alias in node.names:
                names[alias.asname or alias.name.split(".")[0]] = alias.name if alias.asname else alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom):
            source = _source(module, node)
            for alias in node.names:
                names[alias.asname or alias.name] = f"{source}.{alias.name}"
    return names


def imports(module: Module, known: dict[str, Module]) -> set[str]:
    """The modules ``module`` imports, as dotted names (a package when a name is taken from its ``__init__``).
    Modules outside ``known`` are given as written (``torch``, ``comfy.utils``)."""
    out: set[str] = set()
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            source = _source(module, node)
            for alias in node.names:
                full = f"{source}.{alias.name}"
                out.add(full if full in known else source)
    return out


def _split(dotted: str, known: dict[str, Module]) -> tuple[str, str] | None:
    """``'a.b.c.name.attr'`` -> ``('a.b.c', 'name')`` for the longest known module prefix followed by a name."""
    parts = dotted.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        head = ".".join(parts[:cut])
        if head in known:
            return head, parts[cut]
    return None


def _follow(symbol: tuple[str, str], known: dict[str, Module]) -> tuple[str, str]:
    """Through a package's re-exports (``compose.face_crop`` -> ``compose.crop.face_crop``) to the defining module."""
    for _ in range(10):
        module = known[symbol[0]]
        if not module.is_package:
            break
        target = _aliases(module, known, top_level_only=True).get(symbol[1])
        if target is None or target in known:
            break
        split = _split(target, known)
        if split is None:
            break
        symbol = split
    return symbol


def _chain(node: ast.AST) -> list[str] | None:
    """``a.b.c`` -> ``['a', 'b', 'c']``; None when the chain does not start at a plain name."""
    attrs = []
    while isinstance(node, ast.Attribute):
        attrs.append(node.attr)
        node = node.value
    return [node.id, *reversed(attrs)] if isinstance(node, ast.Name) else None


def used_symbols(module: Module, known: dict[str, Module]) -> set[tuple[str, str]]:
    """``(module, name)`` of every top-level name of a ``known`` module that ``module`` refers to: names it
    imports, attributes of modules it imports (``sampler.run(...)``), and its own names used outside their
    own definitions. A package ``__init__``'s re-exports do not count by themselves; they are followed when
    something refers to the package's name."""
    aliases = _aliases(module, known)
    found: set[tuple[str, str]] = set()

    def add(dotted: str) -> None:
        split = _split(dotted, known)
        if split is not None:
            found.add(_follow(split, known))

    for node in ast.walk(module.tree):
        if isinstance(node, ast.ImportFrom) and not (module.is_package and node in module.tree.body):
            source = _source(module, node)
            for alias in node.names:
                if f"{source}.{alias.name}" not in known:
                    add(f"{source}.{alias.name}")
        elif isinstance(node, ast.Attribute):
            chain = _chain(node)
            if chain and chain[0] in aliases:
                add(".".join([aliases[chain[0]], *chain[1:]]))
    for statement in module.tree.body:
        own = getattr(statement, "name", None)
        for node in ast.walk(statement):
            if isinstance(node, ast.Name) and node.id != own and node.id not in aliases:
                found.add((module.name, node.id))
    return found


def public_definitions(module: Module) -> list[str]:
    """Names of the public top-level functions and classes of ``module``."""
    return [node.name for node in module.tree.body
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and not node.name.startswith("_")]
