"""Lazy package exports (PEP 562): `from sdxlab.train import train` imports `sdxlab.train.loop` only then.

A stage package names what it exports and the module each name lives in; importing one of its modules
(`sdxlab.train.config`, as `sdxlab run --help` does for every stage's settings) then no longer imports torch,
peft and diffusers through the package's `__init__`, so the command line answers in about a second.
"""

from __future__ import annotations

import importlib
import importlib.util
import types
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(
    package: str, exports: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]], list[str]]:
    """`__getattr__`, `__dir__` and `__all__` for `package`, whose `exports` map a name to its module (relative to it)."""
    module = importlib.import_module(package)
    namespace = module.__dict__

    class LazyPackage(types.ModuleType):
        def __setattr__(self, name: str, value: Any) -> None:
            # importing a submodule named like one of the package's exports (sdxlab.evaluate.other_people) would
            # bind the name to that module; the export keeps it, as the eager `from ... import` did
            if name in exports and isinstance(value, types.ModuleType) and exports[name] == name:
                return
            super().__setattr__(name, value)

    module.__class__ = LazyPackage

    def __getattr__(name: str) -> Any:
        if name not in exports:  # a submodule, as `import sdxlab.train; sdxlab.train.step` found it before
            if not name.startswith("_") and importlib.util.find_spec(f"{package}.{name}") is not None:
                return importlib.import_module(f"{package}.{name}")
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{exports[name]}"), name)
        namespace[name] = value  # found once; later lookups skip this function
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(exports))

    return __getattr__, __dir__, sorted(exports)
