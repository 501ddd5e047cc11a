"""The package builds on Lightning's public API: no class of ours overrides a private method of
a Lightning base class (one that starts with ``_``), so a Lightning upgrade that changes its
internals cannot silently change what our callbacks, module and loggers do."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import gaitgl_lightning

#: Known exceptions, each with why it is still there (none now).
KNOWN: set[str] = set()


def _our_classes() -> list[type]:
    classes: dict[str, type] = {}
    prefix = gaitgl_lightning.__name__ + "."
    for info in pkgutil.walk_packages(gaitgl_lightning.__path__, prefix):
        if ".analysis" in info.name:  # the notebooks' helpers need the optional extra
            continue
        module = importlib.import_module(info.name)
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ == module.__name__:
                classes[f"{cls.__module__}.{cls.__qualname__}"] = cls
    return list(classes.values())


def _private_overrides(cls: type) -> list[str]:
    """``Class._method`` for each private method ``cls`` defines over a Lightning base's."""
    lightning_bases = [b for b in cls.__mro__[1:] if b.__module__.startswith("lightning")]
    return [
        f"{cls.__qualname__}.{name}"
        for name, value in vars(cls).items()
        if name.startswith("_")
        and not name.startswith("__")
        and callable(value)
        and any(name in vars(base) for base in lightning_bases)
    ]


def test_no_private_lightning_method_is_overridden() -> None:
    found = {o for cls in _our_classes() for o in _private_overrides(cls)}
    assert found - KNOWN == set()
    assert found >= KNOWN  # an exception that is gone is taken off the list
