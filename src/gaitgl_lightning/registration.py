"""Registration by subclassing, the one mechanism behind the package's three registries.

A base class names its registry once, ``class Layout(Registered, registry=LAYOUTS,
kind="layout")``; from then on every subclass that sets a ``name`` puts one instance of itself
in that dict when its module is imported, and a second class with the same name is an error.
Mask strategies (``models.masks``), dataset layouts (``data.formats``) and evaluation protocols
(``evaluation.registry``) use it; ``docs/extending.md`` walks through adding one of each.
Plain Python, so every layer may import this module.
"""

from __future__ import annotations

from typing import Any, ClassVar


class Registered:
    """Mixin: a subclass with a non-empty ``name`` registers ``cls()`` under that name."""

    name: ClassVar[str] = ""
    _registry: ClassVar[dict[str, Any]]
    _kind: ClassVar[str]

    def __init_subclass__(
        cls, registry: dict[str, Any] | None = None, kind: str = "", **kwargs: Any
    ) -> None:
        super().__init_subclass__(**kwargs)
        if registry is not None:  # the base class of a registry
            cls._registry, cls._kind = registry, kind or cls.__name__
        elif cls.name:
            if cls.name in cls._registry:
                raise ValueError(f"{cls._kind} name {cls.name!r} is registered twice")
            cls._registry[cls.name] = cls()
