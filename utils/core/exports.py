"""What a subpackage offers the notebooks: its ``__all__``, each name imported from its module
on first use (PEP 562). Importing a subpackage stays cheap, and ``python -m
utils.handin.install`` runs before torch is installed. Standard library only.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable


def lazy_exports(package: str, modules: dict[str, tuple[str, ...]]
                 ) -> tuple[list[str], Callable[[str], object], Callable[[], list[str]]]:
    """``modules``: module name -> the names the package exports from it (a submodule exported
    as itself lists its own last name) -> the package's ``__all__``, ``__getattr__`` and
    ``__dir__``."""
    where = {name: module for module, names in modules.items() for name in names}

    def __getattr__(name: str) -> object:
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}; its API is "
                                 f"{sorted(where)}")
        module = importlib.import_module(where[name])
        return module if where[name] == f"{package}.{name}" else getattr(module, name)

    def __dir__() -> list[str]:
        return sorted(where)

    return sorted(where), __getattr__, __dir__
