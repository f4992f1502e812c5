"""The layout rules of docs/architecture.md that a test can hold, for the whole installed tree:
every folder is a package that installs, no import circle, the core's layers import only
downwards, no private name crosses a module boundary, and the size limits of the rooms."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TREES = {"ssd_toolkit": ROOT / "ssd_toolkit", "ssd_toolkit.toy": ROOT / "toy",
         "ssd_toolkit.integrations": ROOT / "integrations"}
# The core's layers, lowest first: a module may import its own layer and the ones below.
LAYERS = (("ssd_toolkit.engine", "ssd_toolkit.checks"), ("ssd_toolkit.frameworks",))


def modules():
    """``{dotted module name: path}`` of every installed Python module."""
    found = {}
    for package, folder in TREES.items():
        for path in sorted(folder.rglob("*.py")):
            parts = path.relative_to(folder).with_suffix("").parts
            if "__pycache__" in parts:
                continue
            name = ".".join((package, *parts))
            found[name.removesuffix(".__init__")] = path
    return found


MODULES = modules()


def imports(name, path):
    """``[(imported module, imported names)]`` of a module, at any depth (an import inside a
    function is still a dependency), relative imports resolved."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            for alias in node.names:  # `from pkg import module` imports that module
                sub = f"{module}.{alias.name}"
                found.append((sub, None) if sub in MODULES else (module, alias.name))
        elif isinstance(node, ast.Import):
            found += [(alias.name, None) for alias in node.names]
    return [(m, n) for m, n in found if m.split(".")[0] == "ssd_toolkit"]


def internal_graph():
    graph = {}
    for name, path in MODULES.items():
        targets = set()
        for module, _ in imports(name, path):
            while module and module not in MODULES:  # ssd_toolkit._C and the like
                module = module.rpartition(".")[0]
            if module and module != name:
                targets.add(module)
        graph[name] = targets
    return graph


def test_every_folder_holding_python_is_a_package_that_installs():
    source = (ROOT / "setup.py").read_text().split("\nsetup(")[0]  # the module without its setup() call
    namespace = {"__file__": str(ROOT / "setup.py"), "__name__": "setup_without_setup"}
    exec(compile(source, "setup.py", "exec"), namespace)
    installed = set(namespace["package_dirs"](str(ROOT)))
    for package, folder in TREES.items():
        for path in folder.rglob("*.py"):
            if "__pycache__" in path.parts:
                continue
            rel = path.parent.relative_to(folder).parts
            assert (path.parent / "__init__.py").exists(), f"{path.parent} holds Python files but no __init__.py"
            assert ".".join((package, *rel)) in installed, path.parent


def test_no_import_circle_in_the_project():
    graph = internal_graph()
    index, low, stack, on_stack, circles = {}, {}, [], set(), []

    def visit(v):  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    assert not circles, circles


def _layer(module):
    for i, prefixes in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return i
    return len(LAYERS)


def test_the_cores_layers_import_only_downwards():
    for name, targets in internal_graph().items():
        if name.startswith(("ssd_toolkit.toy", "ssd_toolkit.integrations")):
            continue
        for target in targets:
            assert _layer(target) <= _layer(name), f"{name} (layer {_layer(name)}) imports {target} (layer {_layer(target)})"
            assert not target.startswith(("ssd_toolkit.toy", "ssd_toolkit.integrations")), f"{name} imports {target}"


def test_no_private_name_crosses_a_module_boundary():
    crossings = [f"{name} imports {module}.{imported}"
                 for name, path in MODULES.items()
                 for module, imported in imports(name, path)
                 if (imported or module.rpartition(".")[2]).startswith("_")
                 and not (imported or module.rpartition(".")[2]).startswith("__")
                 and module not in ("ssd_toolkit._C",)]
    assert not crossings, crossings


@pytest.mark.parametrize("folder, limit", [("ssd_toolkit", 15), ("integrations/dreamwaltz", 6)])
def test_the_rooms_stay_small(folder, limit):
    files = sorted(p.name for p in (ROOT / folder).glob("*.py"))
    assert len(files) <= limit, files
