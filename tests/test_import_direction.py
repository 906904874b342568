"""Imports point one way: a module imports only modules of earlier notebooks (the command line, stage 2 and the
explorer sit on top). The one exception is the loss's lazy import of the Triton kernels, which keeps Triton off the CPU
path. Each module is read as source, so that imports inside functions count too."""
import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = ROOT / "unified_latents"
ALLOWED_UPWARD = {("loss", "kernels")}  # lazy, inside the dispatch: the CPU path never imports Triton


def notebook_order() -> dict[str, int]:
    "module name → the number of the notebook that exports it (from the `#| default_exp` cell)."
    order = {}
    for notebook in sorted((ROOT / "nbs").glob("[0-9][0-9]_*.ipynb")):
        match = re.search(r"#\| default_exp (\w+)", notebook.read_text())
        order[match[1]] = int(notebook.name[:2])
    return order


def project_imports(path: Path) -> set[str]:
    "The unified_latents modules a file imports, anywhere in it."
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1 and node.module:
                found.add(node.module.split(".")[0])
            elif node.module and node.module.startswith("unified_latents."):
                found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names if a.name.startswith("unified_latents."))
    return found


ORDER = notebook_order()


def test_every_module_has_a_notebook():
    modules = {p.stem for p in LIBRARY.glob("*.py") if not p.stem.startswith("_")}
    assert modules == set(ORDER), (modules ^ set(ORDER))


@pytest.mark.parametrize("module", sorted(ORDER))
def test_imports_point_to_earlier_notebooks(module):
    upward = {name for name in project_imports(LIBRARY / f"{module}.py")
              if name in ORDER and ORDER[name] >= ORDER[module] and (module, name) not in ALLOWED_UPWARD}
    assert not upward, f"{module} (notebook {ORDER[module]:02d}) imports later modules: " + ", ".join(
        f"{name} ({ORDER[name]:02d})" for name in sorted(upward))


def test_the_check_sees_a_lazy_upward_import(tmp_path):
    "The deliberate mistake: an import of the command line inside a function of the data module is found."
    source = (LIBRARY / "data.py").read_text() + "\n\ndef _late():\n    from .cli import train_main\n"
    (tmp_path / "data.py").write_text(source)
    assert "cli" in project_imports(tmp_path / "data.py")
