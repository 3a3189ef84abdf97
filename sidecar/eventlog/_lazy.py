"""Package exports loaded on first use, so a package's ``__init__`` can name its public names
without importing every module of it (and the modules they need) up front.

The projections, retention and API packages need each other's modules and the server
settings; importing all of them whenever one is asked for would make import cycles and make
``sidecar events tail`` load the whole server. Each of those ``__init__`` modules lists its
names by module and answers ``from package import name`` with :func:`loader`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from importlib import import_module


def public_names(exports: Mapping[str, Sequence[str]]) -> list[str]:
    """Every name ``exports`` (module → its names) lists, sorted: the package's ``__all__``."""
    return sorted(name for names in exports.values() for name in names)


def loader(package: str, exports: Mapping[str, Sequence[str]]) -> Callable[[str], object]:
    """A module ``__getattr__`` for ``package``: a listed name is imported from its module."""
    module_of = {name: module for module, names in exports.items() for name in names}

    def load(name: str) -> object:
        module = module_of.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(import_module(f"{package}.{module}"), name)

    return load
