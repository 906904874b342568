"""Process the notebooks for the docs site: the steps of `nbdev_proc_nbs` after its Quarto install.

`nbdev_proc_nbs` first makes sure Quarto is installed, which needs a download this project's
machines cannot make. This script runs what it does next: refresh the Quarto config, rebuild the
docs index, and pre-process every notebook into _proc/ (show_doc cells added, directives applied).
Where Quarto is installed, `nbdev_docs` runs these steps and then renders the site.
"""
import importlib
import inspect
import pkgutil
import sys

import nbdev.doclinks
from nbdev.quarto import nbdev_sidebar, refresh_quarto_yml
from nbdev.serve import proc_nbs

if __name__ == "__main__":  # proc_nbs spawns worker processes that re-import this file
    refresh_quarto_yml()
    nbdev.doclinks._build_modidx()
    nbdev_sidebar.__wrapped__()
    cache = proc_nbs(force=True)
    pages = sorted(p.relative_to(cache).as_posix() for p in cache.rglob("*.ipynb"))
    print(f"processed {len(pages)} notebooks into {cache.name}/: {', '.join(pages)}")

    # Every exported function and class must appear on a docs page through show_doc.
    import unified_latents
    shown = "".join(p.read_text(encoding="utf-8") for p in cache.rglob("*.ipynb"))
    missing = []
    for info in pkgutil.iter_modules(unified_latents.__path__):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"unified_latents.{info.name}")
        for name in module.__all__:
            obj = getattr(module, name)
            if (inspect.isfunction(obj) or inspect.isclass(obj)) and f"show_doc({name})" not in shown:
                missing.append(f"{info.name}.{name}")
    if missing:
        sys.exit(f"exported but not shown in the docs (no show_doc): {missing}")
    print("every exported function and class is shown in the docs")
