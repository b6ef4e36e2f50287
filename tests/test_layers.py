"""The package's import graph: layers import only downward, and no module imports itself in a cycle.

Layers (docs/architecture.md):  common < network, optim, data < models < tasks < training, applications.
A module may import its own group (its folder, or the applications among themselves) and any lower
layer. Imports under `if TYPE_CHECKING:` are for type hints only and are not counted; imports inside
functions are, since they run.
"""

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("quartznet", "data_prep")
APPLICATIONS = ("quartznet.transcribe", "quartznet.long_audio", "quartznet.decoding", "quartznet.export")
# (group prefix, layer); the longest matching prefix wins.
GROUPS = {
    "quartznet.common": 0,
    "quartznet.network": 1,
    "quartznet.optim": 1,
    "quartznet.data": 1,
    "quartznet.models": 2,
    "quartznet.tasks": 3,
    "quartznet.training": 4,
    **{name: 4 for name in APPLICATIONS},
    "data_prep": 4,
    "quartznet": 0,  # the package's own __init__ (version only)
}
FRAMEWORKS = ("pytorch_lightning", "lightning", "hydra")  # not below the models layer


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def group_of(module: str) -> str:
    matches = [prefix for prefix in GROUPS if module == prefix or module.startswith(prefix + ".")]
    assert matches, f"{module} is in no layer: add it to GROUPS in tests/test_layers.py and docs/architecture.md"
    return max(matches, key=len)


def is_type_checking_block(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def imports(tree: ast.Module) -> list[tuple[str, bool]]:
    """(imported module, at module level?) for every import that runs, TYPE_CHECKING blocks left out."""
    found: list[tuple[str, bool]] = []

    def visit(node: ast.AST, top_level: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if is_type_checking_block(child):
                continue
            if isinstance(child, ast.Import):
                found.extend((alias.name, top_level) for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                found.extend((f"{child.module}.{alias.name}", top_level) for alias in child.names)
            inside = top_level and not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            visit(child, inside)

    visit(tree, True)
    return found


def resolve(name: str, modules: set[str]) -> str | None:
    """The project module an imported name lives in (`a.b.c` may be module a.b's attribute c)."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


@pytest.fixture(scope="module")
def graph() -> dict[str, list[tuple[str, bool, str]]]:
    """module -> [(imported project module, at module level?, raw name)], plus the raw framework imports."""
    paths = [p for package in PACKAGES for p in (REPO / package).rglob("*.py")]
    trees = {module_name(p): ast.parse(p.read_text(), str(p)) for p in paths}
    modules = set(trees)
    edges = {}
    for module, tree in trees.items():
        edges[module] = [(resolve(name, modules), top, name) for name, top in imports(tree)]
    return edges


def test_every_module_sits_in_a_layer(graph):
    for module in graph:
        group_of(module)


def test_imports_point_only_downward(graph):
    upward = []
    for module, edges in graph.items():
        group = group_of(module)
        for target, _, name in edges:
            if target is None:
                if name.split(".")[0] in FRAMEWORKS and GROUPS[group] < GROUPS["quartznet.models"]:
                    upward.append(f"{module} -> {name} (frameworks start at the models layer)")
                continue
            target_group = group_of(target)
            if target_group != group and GROUPS[target_group] >= GROUPS[group]:
                if group in APPLICATIONS and target_group in APPLICATIONS:
                    continue  # the applications may use one another
                upward.append(f"{module} ({group}) -> {target} ({target_group})")
    assert not upward, "imports that do not point downward:\n" + "\n".join(upward)


def test_no_import_cycles(graph):
    top_level = {m: sorted({t for t, top, _ in edges if t and top and t != m}) for m, edges in graph.items()}
    state: dict[str, str] = {}
    path: list[str] = []

    def visit(module: str) -> None:
        state[module] = "open"
        path.append(module)
        for target in top_level[module]:
            if state.get(target) == "open":
                cycle = path[path.index(target):] + [target]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target)
        path.pop()
        state[module] = "done"

    for module in sorted(top_level):
        if module not in state:
            visit(module)


def test_the_rule_catches_an_upward_import(graph, monkeypatch):
    """The checker itself: a models module importing the transcribe application is flagged."""
    fake = dict(graph)
    fake["quartznet.models.ctc"] = [*graph["quartznet.models.ctc"], ("quartznet.transcribe", False, "quartznet.transcribe")]
    with pytest.raises(AssertionError, match="quartznet.models.ctc"):
        test_imports_point_only_downward(fake)
