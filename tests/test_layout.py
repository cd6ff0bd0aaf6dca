"""The layout a newcomer walks: the scripts at the top, the library in folders by role, imports in one
direction only, and each run-folder file name spelled in one place."""
from __future__ import annotations

import ast
import os
import re
from typing import Dict, List, Set

from conftest import PROJECT

LIBRARY_FOLDERS = ("inputs", "decoders", "training", "scoring", "serving", "tagging")
# The design card's modules and the scripts a user runs; nothing else lives in the top folder.
TOP_MODULES = {"config", "preprocess", "data_loader", "model", "train", "predict", "evaluate", "package", "export",
               "app"}
SCRIPTS = {"preprocess", "train", "predict", "evaluate", "package", "export", "app"}


def project_modules() -> Dict[str, str]:
    """Module name ("train", "inputs.vocabulary") -> file path, for the top folder and the library folders."""
    modules = {name[:-3]: os.path.join(PROJECT, name) for name in os.listdir(PROJECT) if name.endswith(".py")}
    for folder in LIBRARY_FOLDERS:
        for name in os.listdir(os.path.join(PROJECT, folder)):
            if name.endswith(".py") and name != "__init__.py":
                modules[f"{folder}.{name[:-3]}"] = os.path.join(PROJECT, folder, name)
    return modules


def import_graph() -> Dict[str, Set[str]]:
    """Which project modules each module imports, anywhere in its file (inside functions too)."""
    modules = project_modules()
    graph = {}
    for module, path in modules.items():
        with open(path, encoding="utf-8") as handle:
            tree = ast.parse(handle.read())
        imported = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module)
                imported.update(f"{node.module}.{alias.name}" for alias in node.names)
        graph[module] = {name for name in imported if name in modules and name != module}
    return graph


def floors(graph: Dict[str, Set[str]]) -> Dict[str, int]:
    """Each module's floor: 0 imports no project module, else one above the highest module it imports.
    Raises on a circle, naming it."""
    floor: Dict[str, int] = {}

    def visit(module: str, path: List[str]) -> int:
        if module in path:
            raise AssertionError("import circle: " + " -> ".join(path[path.index(module):] + [module]))
        if module not in floor:
            floor[module] = 1 + max((visit(other, path + [module]) for other in graph[module]), default=-1)
        return floor[module]

    for module in graph:
        visit(module, [])
    return floor


def test_the_imports_have_no_circle_and_the_docs_draw_their_floors():
    computed = floors(import_graph())
    with open(os.path.join(PROJECT, "docs", "scripts.md"), encoding="utf-8") as handle:
        drawn = {}
        for line in handle:
            match = re.match(r"floor (\d+)\s+(.*)$", line.strip())
            if match:
                for name in match.group(2).split():
                    drawn[name.replace("/", ".")] = int(match.group(1))
    assert drawn == computed, "docs/scripts.md's drawing of the import floors is out of date"


def test_the_library_never_imports_a_script():
    graph = import_graph()
    for module, imported in graph.items():
        if module not in SCRIPTS:
            assert not imported & SCRIPTS, f"{module} imports the script(s) {sorted(imported & SCRIPTS)}"


def test_the_top_folder_holds_only_the_scripts_and_the_design_cards_modules():
    top = {name[:-3] for name in os.listdir(PROJECT) if name.endswith(".py")}
    assert top == TOP_MODULES


def test_each_run_folder_file_name_is_spelled_in_one_place():
    from inputs import run_folder

    names = {value for key, value in vars(run_folder).items()
             if key.isupper() and isinstance(value, str) and "." in value}
    names |= {name for pair in run_folder.PHASE_FILES.values() for name in pair}
    assert {"model.keras", "metadata.json", "training_state_fine_tune.json", "vocabulary.json"} <= names
    for module, path in project_modules().items():
        if module == "inputs.run_folder":
            continue
        with open(path, encoding="utf-8") as handle:
            literals = {node.value for node in ast.walk(ast.parse(handle.read()))
                        if isinstance(node, ast.Constant) and isinstance(node.value, str)}
        # config.py is the bottom floor, below the run folder's module: its --model_file default names the file.
        allowed = {"model.keras"} if module == "config" else set()
        assert not (literals & names) - allowed, f"{module} spells {sorted((literals & names) - allowed)}"


def code_files() -> Dict[str, str]:
    """Every Python file of the pipeline, the benchmarks and their probes (not the tests), by its path."""
    paths = {os.path.relpath(path, PROJECT): path for path in project_modules().values()}
    for folder in ("benchmarks", os.path.join("benchmarks", "probes")):
        paths.update({os.path.join(folder, name): os.path.join(PROJECT, folder, name)
                      for name in os.listdir(os.path.join(PROJECT, folder)) if name.endswith(".py")})
    return paths


def test_no_code_file_passes_300_lines():
    """A file a reader takes in at once: a longer one is split by responsibility (benchmarks: by stage)."""
    for name, path in code_files().items():
        with open(path, encoding="utf-8") as handle:
            lines = len(handle.read().splitlines())
        assert lines <= 300, f"{name} has {lines} lines"


def test_evaluation_file_names_are_built_in_the_run_folder_module_only():
    """evaluate.py writes them and benchmarks read them: both ask inputs/run_folder.py's evaluation_file."""
    from inputs.run_folder import EVALUATION_PREFIXES

    for module, path in code_files().items():
        if module == os.path.join("inputs", "run_folder.py"):
            continue
        with open(path, encoding="utf-8") as handle:
            built = {node.value for node in ast.walk(ast.parse(handle.read()))
                     if isinstance(node, ast.Constant) and isinstance(node.value, str)
                     and node.value.startswith(EVALUATION_PREFIXES)}
        assert not built, f"{module} builds an evaluation file name itself: {sorted(built)}"


def drawing() -> str:
    """The floors as docs/scripts.md draws them: `python tests/test_layout.py` prints them."""
    by_floor: Dict[int, List[str]] = {}
    for module, floor in floors(import_graph()).items():
        by_floor.setdefault(floor, []).append(module.replace(".", "/"))
    return "\n".join(f"floor {floor}  " + "  ".join(sorted(by_floor[floor])) for floor in sorted(by_floor))


if __name__ == "__main__":
    print(drawing())
