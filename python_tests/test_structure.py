"""The Python package's shape: imports point one way (no cycle, function-level imports included;
subpackages' modules by their dotted name, e.g. `handlers.code`), no module uses another's private
(`_x`) names, and the modules a plain Python (the CLI, a client script) imports never load bpy."""

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
    "cli_common",
    "cli_trust",
    "audit",
    "__main__",
    "pytest_plugin",  # loaded by every pytest run in an environment with the wheel
    "pytest_runner",  # imports bpy only inside Blender, to reset the scene
    "handlers",
    "handlers.inflight",  # the runtime's signal handler reads it
}


def _module_name(package, path, file):
    """The module's dotted name inside the package ("handlers.code"; the package's own __init__:
    its package name, a subpackage's: the subpackage)."""
    parts = list(file.relative_to(path).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts) or ("blendwire" if package == "blendwire" else "__init__")


def _resolve(modules, base, name):
    """`base.name` if that is a module of the package, else `base` (an attribute of it)."""
    full = f"{base}.{name}" if base else name
    return full if full in modules else base


def _imports(package, path):
    """{module: {(imported module of this package, at module level?)}} from the source, and
    {module: {private names (`_x`) it takes from other modules of the package}}."""
    files = {_module_name(package, path, f): f for f in sorted(path.rglob("*.py"))}
    modules = set(files) | {"_core"}
    found, private = {}, {}
    for name, file in files.items():
        is_pkg = file.stem == "__init__"
        here = name.split(".") if is_pkg and name != "blendwire" else name.split(".")[:-1]
        if name == "blendwire":
            here = []
        edges, taken, aliases = set(), set(), {}
        tree = ast.parse(file.read_text())
        top_level = {id(n) for n in tree.body}
        for node in ast.walk(tree):
            targets = []
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = ".".join(here[: len(here) - node.level + 1])
                    base = f"{base}.{node.module}" if node.module and base else (node.module or base)
                elif node.module == package or (node.module or "").startswith(package + "."):
                    base = node.module[len(package) + 1 :]
                else:
                    continue
                for alias in node.names:
                    target = _resolve(modules, base, alias.name)
                    targets.append(target)
                    if target != base:
                        aliases[alias.asname or alias.name] = target
                    elif alias.name.startswith("_"):
                        taken.add(f"{base}.{alias.name}")
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.startswith(package + "."):
                        targets.append(alias.name[len(package) + 1 :])
                if any(a.name == "bpy" for a in node.names):
                    edges.add(("bpy", id(node) in top_level))
            elif (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in aliases
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
                and f"{aliases[node.value.id]}.{node.attr}" not in modules
            ):
                taken.add(f"{aliases[node.value.id]}.{node.attr}")
                continue
            else:
                continue
            edges.update((t, id(node) in top_level) for t in targets if t and t != name)
        found[name] = edges
        private[name] = taken
    return found, private


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
    modules, _ = _imports(package, PACKAGES[package])
    # The package's __init__ re-exports; edges into it are not layering edges.
    graph = {m: {t for t, _ in edges if t in modules and t != "blendwire"} for m, edges in modules.items()}
    assert _cycle(graph) is None, f"import cycle in {package}: {' -> '.join(_cycle(graph))}"


@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_no_module_uses_another_modules_private_names(package):
    _, private = _imports(package, PACKAGES[package])
    taken = {m: sorted(names) for m, names in private.items() if names}
    assert not taken, f"modules using another module's private (_x) names: {taken}"


def test_plain_python_modules_never_load_bpy():
    modules, _ = _imports("blendwire", PACKAGES["blendwire"])
    assert NO_BPY <= set(modules) | {"_core"}, f"not modules of the package: {sorted(NO_BPY - set(modules))}"
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


# Environment reads outside config.py that are not settings: pytest_runner saves a variable it sets
# for a moment, to restore it.
ENV_READS_ALLOWED = {("pytest_runner", "PYTEST_DISABLE_PLUGIN_AUTOLOAD")}


def _env_reads(tree):
    """(variable or "?", line) of every read of one environment variable: os.environ.get(...),
    os.getenv(...), os.environ[...] (read), `... in os.environ`. Copying the whole environment for a
    child process (`dict(os.environ)`) is not a read of a setting."""

    def is_environ(node):
        return isinstance(node, ast.Attribute) and node.attr == "environ"

    def name(arg):
        return arg.value if isinstance(arg, ast.Constant) and isinstance(arg.value, str) else "?"

    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            f = node.func
            if (f.attr == "get" and is_environ(f.value)) or f.attr == "getenv":
                yield name(node.args[0]) if node.args else "?", node.lineno
        elif isinstance(node, ast.Subscript) and is_environ(node.value) and isinstance(node.ctx, ast.Load):
            yield name(node.slice), node.lineno
        elif isinstance(node, ast.Compare) and any(is_environ(c) for c in node.comparators):
            yield name(node.left), node.lineno


def test_config_owns_every_environment_read():
    """In the package and in the add-on (which asks blendwire.config too)."""
    found = []
    for package, path in sorted(PACKAGES.items()):
        for file in sorted(path.rglob("*.py")):
            module = _module_name(package, path, file)
            if (package, module) == ("blendwire", "config"):
                continue
            for var, line in _env_reads(ast.parse(file.read_text())):
                if (module, var) not in ENV_READS_ALLOWED:
                    found.append(f"{file.relative_to(ROOT)}:{line} reads ${var}")
    assert not found, "read the environment through blendwire.config instead:\n" + "\n".join(found)
