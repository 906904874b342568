"""Every exported name is documented, and the docs index (nbdev's _modidx) knows every module."""
import importlib
import inspect
import pkgutil

import unified_latents
from unified_latents._modidx import d as modidx

MODULES = sorted(m.name for m in pkgutil.iter_modules(unified_latents.__path__) if not m.name.startswith("_"))


def test_modules_exist():
    assert {"noise", "loss", "encoding", "prior", "decoder"} <= set(MODULES)


def test_every_exported_function_and_class_has_a_docstring():
    undocumented = []
    for name in MODULES:
        module = importlib.import_module(f"unified_latents.{name}")
        assert module.__doc__, f"module unified_latents.{name} has no docstring"
        for symbol in module.__all__:
            obj = getattr(module, symbol)
            if inspect.isfunction(obj) or inspect.isclass(obj):
                if not inspect.getdoc(obj):
                    undocumented.append(f"{name}.{symbol}")
                if inspect.isclass(obj):
                    for method_name, method in vars(obj).items():
                        if inspect.isfunction(method) and not method_name.startswith("_") and not inspect.getdoc(method):
                            undocumented.append(f"{name}.{symbol}.{method_name}")
    assert not undocumented, f"exported without a docstring: {undocumented}"


def test_docs_index_lists_every_module_and_export():
    syms = modidx["syms"]
    for name in MODULES:
        key = f"unified_latents.{name}"
        assert key in syms, f"{key} missing from _modidx (run nbdev_export)"
        module = importlib.import_module(key)
        for symbol in module.__all__:
            obj = getattr(module, symbol)
            if inspect.isfunction(obj) or inspect.isclass(obj):
                assert f"{key}.{symbol}" in syms[key], f"{key}.{symbol} missing from the docs index"
