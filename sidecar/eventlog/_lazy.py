"""Package exports loaded on first use, so a package's ``__init__`` can name its public names
without importing every module of it (and the modules they need) up front.

The projections, retention and API packages need each other's modules and the server
settings; importing all of them whenever one is asked for would make import cycles and make
``sidecar events tail`` load the whole server. Each of those ``__init__`` modules keeps a table
name → module and answers ``from package import name`` through :func:`load`.
"""

from __future__ import annotations

from importlib import import_module


def load(package: str, exports: dict[str, str], name: str) -> object:
    """``name`` from the module of ``package`` that ``exports`` names (a module ``__getattr__``)."""
    module = exports.get(name)
    if module is None:
        raise AttributeError(f"module {package!r} has no attribute {name!r}")
    return getattr(import_module(f"{package}.{module}"), name)
