"""The layout is the architecture: checks over the import graph of ``aniportrait_lib`` read from the source
(no ComfyUI, nothing imported)."""
from __future__ import annotations

import pytest

from support import imports

#: the ground floor: plain data types, image conversions, reading model files; any module may import it
GROUND_FLOOR = {"data", "imaging", "weights"}

#: rank of each part of aniportrait_lib (a package, or a top-level module). A module may import the ground
#: floor, modules of its own part, and parts of a LOWER rank; importing a part of the same or a higher rank
#: climbs. The ranks are what the imports are today:
RANK = {
    "ground": 0,
    "networks": 1,   # UNet, pose guider, attention: torch only
    "face": 1,       # landmarks, geometry, pose maths, drawing
    "media": 1,      # mp4 writing and decoding
    "audio": 2,      # audio.models builds on networks.positional, audio.inference on face.pose_math
    "compose": 3,    # crop/paste builds on face.tracking
    "motion": 3,     # dubbing builds on audio.features, the rest on face
    "sampling": 3,   # the video networks, the pose images of face.renderer
    "preflight": 4,  # checks a whole run: audio.inference and sampling.sampler
}

#: the longest a module of the library or the nodes may be
MAX_LINES = 600

#: what the library never imports: ComfyUI (the nodes are the only layer that knows it)
COMFY = {"comfy", "comfy_api", "comfy_extras", "folder_paths", "nodes"}

#: names in the library that only tests or tools use (none): move a test-only helper to tests/support instead
TEST_ONLY_ALLOWED: set[tuple[str, str]] = set()


@pytest.fixture(scope="module")
def library():
    return imports.read_modules("aniportrait_lib")


@pytest.fixture(scope="module")
def graph(library):
    """module -> the library modules it imports."""
    return {name: {i for i in imports.imports(module, library) if i in library} for name, module in library.items()}


def part(module: str) -> str:
    """``aniportrait_lib.face.tracking`` -> ``face``; a ground-floor module -> ``ground``."""
    parts = module.split(".")
    if len(parts) == 1:
        return "ground"  # the package's own __init__
    return "ground" if parts[1] in GROUND_FLOOR else parts[1]


def test_every_part_has_a_rank(library):
    unranked = sorted({part(name) for name in library} - set(RANK))
    assert not unranked, f"give {unranked} a rank in RANK (what may it import, what may import it?)"


def test_no_import_circle(graph):
    circles, state = [], {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for target in sorted(graph[module]):
            if state.get(target) == "open":
                circles.append(path[path.index(target):] + [target])
            elif target not in state:
                visit(target, path + [target])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not circles, "import circles:\n" + "\n".join(" -> ".join(c) for c in circles)


def test_no_import_climbs(graph):
    climbing = [f"{source} ({part(source)}, rank {RANK[part(source)]}) imports {target} "
                f"({part(target)}, rank {RANK[part(target)]})"
                for source, targets in sorted(graph.items()) for target in sorted(targets)
                if part(target) != part(source) and RANK.get(part(target), 99) >= RANK.get(part(source), -1)]
    assert not climbing, "imports that climb:\n" + "\n".join(climbing)


def test_the_ranks_are_used(graph):
    """Each rank above the ground floor holds a part that imports from the rank just below it (else the table
    claims an order the code does not have: merge the ranks)."""
    reached = {RANK[part(t)] for s, targets in graph.items() for t in targets if part(t) != part(s)
               and RANK[part(s)] == RANK[part(t)] + 1}
    assert reached == set(range(max(RANK.values()))), reached


@pytest.mark.parametrize("folder", ["aniportrait_lib", "nodes"])
def test_no_module_over_max_lines(folder):
    long = {str(module.path.relative_to(imports.REPO_ROOT)): n for module in imports.read_modules(folder).values()
            if (n := len(module.path.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def test_library_never_imports_comfyui(library):
    found = sorted(f"{name} imports {i}" for name, module in library.items()
                   for i in imports.imports(module, library) if i.split(".")[0] in COMFY)
    assert not found, found


def test_nothing_in_the_library_exists_only_for_tests_or_tools(library):
    """Every module of the library is imported, and every public top-level function and class used, by the
    library itself, the nodes or the user's scripts (tests/ and tools/ do not count)."""
    production = {**library, **imports.read_modules("nodes", flat=("scripts",))}
    used = set().union(*(imports.used_symbols(module, production) for module in production.values()))
    imported = set().union(*(imports.imports(module, production) for module in production.values()))
    unused_modules = sorted(name for name, module in library.items()
                            if not module.is_package and name not in imported)
    unused = sorted(f"{name}.{symbol}" for name, module in library.items() for symbol in imports.public_definitions(module)
                    if (name, symbol) not in used and (name, symbol) not in TEST_ONLY_ALLOWED)
    assert not unused_modules and not unused, (
        f"modules nothing but tests/tools import: {unused_modules}\nnames nothing but tests/tools use: {unused}")


def test_the_allowlist_is_current(library):
    """An allowed test-only name that is gone, or is used by the pack now, leaves the list."""
    production = {**library, **imports.read_modules("nodes", flat=("scripts",))}
    used = set().union(*(imports.used_symbols(module, production) for module in production.values()))
    stale = sorted(f"{m}.{s}" for m, s in TEST_ONLY_ALLOWED
                   if m not in library or s not in imports.public_definitions(library[m]) or (m, s) in used)
    assert not stale, f"remove from TEST_ONLY_ALLOWED: {stale}"
