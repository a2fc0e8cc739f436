"""The Python package's shape: imports point one way (no cycle, function-level imports included),
and the modules a plain Python (the CLI, a client script) imports never load bpy."""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGES = {"blendwire": ROOT / "python" / "blendwire", "blendwire_addon": ROOT / "addon" / "blendwire_addon"}
# Importable without Blender: `blendwire call/status/mcp`, `import blendwire`, the client.
NO_BPY = {
    "blendwire",
    "_core",
    "errors",
    "config",
    "persist",
    "logs",
    "client",
    "jobs",
    "blender_child",
    "process",
    "cli",
    "__main__",
    "pytest_plugin",  # loaded by every pytest run in an environment with the wheel
    "pytest_runner",  # imports bpy only inside Blender, to reset the scene
}


def _imports(package, path):
    """{module: {(imported module of this package, at module level?)}} from the source."""
    found = {}
    for file in path.glob("*.py"):
        name = file.stem
        edges = set()
        tree = ast.parse(file.read_text())
        top_level = {id(n) for n in tree.body}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                targets = [node.module] if node.module else [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith(package + "."):
                targets = [node.module.split(".")[1]]
            elif isinstance(node, ast.ImportFrom) and node.module == package:
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name.split(".", 2)[1] for a in node.names if a.name.startswith(package + ".")]
                if any(a.name == "bpy" for a in node.names):
                    edges.add(("bpy", id(node) in top_level))
            else:
                continue
            edges.update((t, id(node) in top_level) for t in targets if t)
        found["blendwire" if name == "__init__" and package == "blendwire" else name] = edges
    return found


def _cycle(graph):
    """One import cycle as a list of modules, or None."""
    state = {}

    def visit(node, stack):
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state:
                found = visit(nxt, stack + [nxt])
                if found:
                    return found
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node, [node])
            if found:
                return found
    return None


@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_imports_point_one_way(package):
    modules = _imports(package, PACKAGES[package])
    # The package's __init__ re-exports; edges into it are not layering edges.
    graph = {m: {t for t, _ in edges if t in modules and t != "blendwire"} for m, edges in modules.items()}
    assert _cycle(graph) is None, f"import cycle in {package}: {' -> '.join(_cycle(graph))}"


def test_plain_python_modules_never_load_bpy():
    modules = _imports("blendwire", PACKAGES["blendwire"])
    for name in NO_BPY:
        # Module-level imports only: a function-level import (e.g. serve for `--bpy`) runs on demand.
        reached, todo = set(), [name]
        while todo:
            m = todo.pop()
            for target, top in modules.get(m, ()):
                if top and target not in reached:
                    reached.add(target)
                    todo.append(target)
        assert "bpy" not in reached, f"importing blendwire.{name} loads bpy: {sorted(reached)}"
