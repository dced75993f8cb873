"""The library's shape, read from its source (ast, nothing imported): no import circle between its
modules, lazy imports inside functions included, and no private name (_x) used outside its module."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MODULES = {p.stem: p for p in sorted(ROOT.glob("*.py"))}


def imports_of(path: Path) -> dict[str, set[str]]:
    """{library module imported anywhere in the file (top level or inside a function):
    the names used from it (from-imports and attribute access on its alias)}."""
    tree = ast.parse(path.read_text(), filename=str(path))
    used: dict[str, set[str]] = {}
    aliases = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                top = a.name.split(".")[0]
                if top in MODULES:
                    used.setdefault(top, set())
                    aliases[a.asname or top] = top
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            top = node.module.split(".")[0]
            if top in MODULES:
                used.setdefault(top, set()).update(a.name for a in node.names)
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                and node.value.id in aliases):
            used[aliases[node.value.id]].add(node.attr)
    return used


GRAPH = {name: imports_of(path) for name, path in MODULES.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A path a -> ... -> a in the graph, or None (depth-first search, three colours)."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_find_cycle_finds_one():
    """The checker itself: a planted circle is found, a chain is not."""
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"a"}}) == ["a", "a"]


def test_imports_of_sees_lazy_imports(tmp_path):
    path = tmp_path / "m.py"
    path.write_text("def f():\n    import grpo as G\n    return G._x, G.train\n"
                    "from model import _y\n")
    assert imports_of(path) == {"grpo": {"_x", "train"}, "model": {"_y"}}


def test_library_modules_import_no_circle():
    assert {"grpo", "eval", "study", "theory", "model", "data", "grader"} <= set(MODULES)
    graph = {m: set(used) - {m} for m, used in GRAPH.items()}
    cycle = find_cycle(graph)
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_model_py_imports_neither_fast_decode_nor_lora():
    """The sampler a reader studies in model.py is the one its generate runs unless told otherwise:
    model.py stands alone, lora.py builds on it, fast_decode.py on both."""
    layers = {"model", "lora", "fast_decode"}
    assert {m: set(GRAPH[m]) & layers - {m} for m in layers} == {
        "model": set(), "lora": {"model"}, "fast_decode": {"lora", "model"}}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_private_name_crosses_modules(module):
    private = {(other, name) for other, names in GRAPH[module].items()
               for name in names if name.startswith("_") and not name.startswith("__")}
    assert not private, f"{module}.py uses private names of other modules: {sorted(private)}"
