"""The package's import graph: layers import only downward, and no module imports itself in a cycle.

Layers (docs/architecture.md):  common < network, optim, data < models < tasks
                                < training, long_audio, decoding, export, data_prep < transcribe.
A module may import its own group (its folder) and any lower layer. Imports under `if TYPE_CHECKING:`
are for type hints only and are not counted; imports inside functions are, for layers and cycles alike,
since they run. Relative imports are resolved against the importing module's package. A module that no
entry below places fails the test: a new file needs a layer (here and in docs/architecture.md).
"""

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("quartznet", "data_prep")
# (group, layer): a folder's modules are in its group; a group naming a module is that module alone.
GROUPS = {
    "quartznet": 0,  # the package's own __init__ (version only), this module alone
    "quartznet.common": 0,
    "quartznet.network": 1,
    "quartznet.optim": 1,
    "quartznet.data": 1,
    "quartznet.models": 2,
    "quartznet.tasks": 3,
    "quartznet.training": 4,
    "quartznet.long_audio": 4,
    "quartznet.decoding": 4,
    "quartznet.export": 4,
    "data_prep": 4,
    "quartznet.transcribe": 5,  # uses long_audio and decoding
}
FOLDERS = {group for group in GROUPS if (REPO / Path(*group.split("."))).is_dir()}
FRAMEWORKS = ("pytorch_lightning", "lightning", "lightning_fabric", "hydra")  # not below the models layer


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def group_of(module: str) -> str:
    """The group a module belongs to: itself when it is a group, else the folder group it lies in."""
    if module in GROUPS:
        return module
    matches = [folder for folder in FOLDERS if module.startswith(folder + ".") and folder != "quartznet"]
    assert matches, f"{module} is in no layer: add it to GROUPS in tests/test_layers.py and docs/architecture.md"
    return max(matches, key=len)


def is_type_checking_block(node: ast.AST) -> bool:
    """`if TYPE_CHECKING:` (or `typing.TYPE_CHECKING`): its body is for type hints only; its `else` runs."""
    return isinstance(node, ast.If) and ast.unparse(node.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING")


def imports(tree: ast.Module, module: str, is_package: bool) -> list[tuple[str, bool]]:
    """(imported module, at module level?) for every import that runs, TYPE_CHECKING blocks left out;
    relative imports resolved against `module`'s package."""
    package = module if is_package else module.rpartition(".")[0]
    found: list[tuple[str, bool]] = []

    def absolute(node: ast.ImportFrom) -> str:
        if node.level == 0:
            return node.module or ""
        base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
        return ".".join([*base, *([node.module] if node.module else [])])

    def visit(node: ast.AST, top_level: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if is_type_checking_block(child):
                for branch in child.orelse:
                    visit(ast.Module(body=[branch], type_ignores=[]), top_level)
                continue
            if isinstance(child, ast.Import):
                found.extend((alias.name, top_level) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                source = absolute(child)
                found.extend((f"{source}.{alias.name}" if source else alias.name, top_level) for alias in child.names)
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


Graph = dict[str, list[tuple[str | None, bool, str]]]


def build_graph(sources: dict[str, tuple[str, bool]]) -> Graph:
    """module -> [(imported project module or None, at module level?, raw name)] from {module: (source,
    is a package)}."""
    trees = {module: (ast.parse(source), is_package) for module, (source, is_package) in sources.items()}
    modules = set(trees)
    return {module: [(resolve(name, modules), top, name) for name, top in imports(tree, module, is_package)]
            for module, (tree, is_package) in trees.items()}


@pytest.fixture(scope="module")
def graph() -> Graph:
    paths = [p for package in PACKAGES for p in (REPO / package).rglob("*.py")]
    return build_graph({module_name(p): (p.read_text(), p.name == "__init__.py") for p in paths})


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
                upward.append(f"{module} ({group}) -> {target} ({target_group})")
    assert not upward, "imports that do not point downward:\n" + "\n".join(upward)


def test_no_import_cycles(graph):
    """No cycle among modules, counting the imports inside functions too (they run when called)."""
    edges = {m: sorted({t for t, _, _ in targets if t and t != m}) for m, targets in graph.items()}
    state: dict[str, str] = {}
    path: list[str] = []

    def visit(module: str) -> None:
        state[module] = "open"
        path.append(module)
        for target in edges[module]:
            if state.get(target) == "open":
                cycle = path[path.index(target):] + [target]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target)
        path.pop()
        state[module] = "done"

    for module in sorted(edges):
        if module not in state:
            visit(module)


# --- the checker checks: a planted violation of each rule fails ----------------------------------------

PLANTED_BASE = {
    "quartznet": ("", True),
    "quartznet.common": ("", True),
    "quartznet.common.errors": ("", False),
    "quartznet.models": ("", True),
    "quartznet.models.ctc": ("from quartznet.common import errors\n", False),
    "quartznet.decoding": ("from quartznet.models import ctc\n", False),
    "quartznet.transcribe": ("def run():\n    from quartznet.decoding import x\n", False),
}


def planted(**sources: str) -> Graph:
    base = dict(PLANTED_BASE)
    for module, source in sources.items():
        name = module.replace("__", ".")
        base[name] = (source, base.get(name, ("", False))[1])
    return build_graph(base)


def test_the_planted_base_passes():
    graph = planted()
    test_every_module_sits_in_a_layer(graph)
    test_imports_point_only_downward(graph)
    test_no_import_cycles(graph)


def test_an_upward_import_is_caught():
    with pytest.raises(AssertionError, match=r"quartznet.models.ctc \(quartznet.models\) -> quartznet.decoding"):
        test_imports_point_only_downward(planted(quartznet__models__ctc="from quartznet.decoding import x\n"))


def test_an_upward_import_inside_a_function_is_caught():
    source = "def load():\n    from quartznet.transcribe import run\n"
    with pytest.raises(AssertionError, match=r"quartznet.decoding \(quartznet.decoding\) -> quartznet.transcribe"):
        test_imports_point_only_downward(planted(quartznet__decoding=source))


def test_a_relative_upward_import_is_caught():
    with pytest.raises(AssertionError, match=r"quartznet.common.errors \(quartznet.common\) -> quartznet.models.ctc"):
        test_imports_point_only_downward(planted(quartznet__common__errors="from ..models import ctc\n"))


def test_a_framework_below_the_models_layer_is_caught():
    with pytest.raises(AssertionError, match="frameworks start at the models layer"):
        test_imports_point_only_downward(planted(quartznet__common__errors="import pytorch_lightning\n"))


def test_a_cycle_through_a_function_level_import_is_caught():
    graph = planted(quartznet__common__errors="def f():\n    from quartznet.common import checkpoint\n",
                    quartznet__common__checkpoint="from quartznet.common import errors\n")
    test_imports_point_only_downward(graph)  # within one layer: only the cycle rule sees it
    with pytest.raises(pytest.fail.Exception, match="import cycle: quartznet.common.checkpoint -> quartznet.common.errors"):
        test_no_import_cycles(graph)


def test_a_module_outside_every_layer_is_caught():
    with pytest.raises(AssertionError, match="quartznet.newthing is in no layer"):
        test_every_module_sits_in_a_layer(planted(quartznet__newthing=""))


def test_an_application_importing_another_of_its_layer_is_caught():
    with pytest.raises(AssertionError, match=r"quartznet.export \(quartznet.export\) -> quartznet.decoding"):
        test_imports_point_only_downward(planted(quartznet__export="from quartznet.decoding import x\n"))


def test_relative_imports_of_a_package_resolve_against_the_package_itself():
    test_imports_point_only_downward(planted(quartznet__common="from .errors import x\n"))  # its own folder
    with pytest.raises(AssertionError, match=r"quartznet.common \(quartznet.common\) -> quartznet.models"):
        test_imports_point_only_downward(planted(quartznet__common="from ..models import ctc\n"))


def test_imports_under_type_checking_do_not_count_but_its_else_does():
    hinted = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from quartznet.decoding import x\n"
    test_imports_point_only_downward(planted(quartznet__models__ctc=hinted))
    with pytest.raises(AssertionError, match="quartznet.models.ctc"):
        test_imports_point_only_downward(planted(quartznet__models__ctc=hinted + "else:\n    from quartznet.decoding import x\n"))


# --- docs/architecture.md names every folder and module ------------------------------------------------


def unnamed(page: str, modules: list[Path]) -> list[str]:
    """The folders the page's layer diagram (its first code block) does not show, and the modules whose
    name the page never mentions as a word."""
    diagram = page.split("```", 2)[1]
    missing = [f"{folder.replace('.', '/')}/" for folder in sorted(FOLDERS) if folder != "quartznet"
               if f"{folder.replace('.', '/')}/" not in diagram]
    words = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", page))
    return missing + [str(path.relative_to(REPO)) for path in modules if path.stem != "__init__" and path.stem not in words]


def test_the_architecture_page_names_every_folder_and_module():
    page = (REPO / "docs" / "architecture.md").read_text()
    missing = unnamed(page, sorted(p for package in PACKAGES for p in (REPO / package).rglob("*.py")))
    assert not missing, "docs/architecture.md does not mention: " + ", ".join(missing)


def test_the_page_check_catches_a_missing_folder_and_a_name_inside_a_word():
    page = "```\n quartznet/common/  errors\n```\nThe folder holds it.\n"
    assert "quartznet/network/" in unnamed(page, [])
    modules = [REPO / "quartznet" / "common" / "errors.py", REPO / "quartznet" / "network" / "fold.py"]
    assert "quartznet/network/fold.py" in unnamed(page, modules)  # "folder" does not name fold.py
    assert "quartznet/common/errors.py" not in unnamed(page, modules)
