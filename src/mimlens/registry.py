"""The one shape of mimlens's registries — the downstream tasks (:mod:`mimlens.tasks.registry`), the pre-training
objectives (:mod:`mimlens.pretrain.registry`) and the analyses (:mod:`mimlens.analysis.registry`): named entries
that every command, the demo and the report read, and that a plug-in extends with ``register``.

Standard library only, so that a command line can list the entries cheaply. An entry names its functions as
``"module:name"`` (imported when first used; ``name`` may be dotted, e.g. a classmethod) or gives callables.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from typing import Any


def resolve(ref: str | Callable | None) -> Callable | None:
    """``ref`` itself when callable (or None), else the attribute ``"module:name"`` names."""
    if ref is None or callable(ref):
        return ref
    module, name = ref.split(":")
    target: Any = importlib.import_module(module)
    for part in name.split("."):
        target = getattr(target, part)
    return target


class Registry(dict):
    """Entries of one ``kind`` by their ``name``, in registration order."""

    def __init__(self, kind: str, entries: Iterable[Any] = ()):
        super().__init__((entry.name, entry) for entry in entries)
        self.kind = kind

    def register(self, entry: Any) -> Any:
        """Add ``entry`` (a plug-in calls this before the command line is built); returns it."""
        self[entry.name] = entry
        return entry

    def entry(self, name: str) -> Any:
        """The entry ``name``; a one-line error naming the known ones otherwise."""
        if name not in self:
            from mimlens.errors import MimlensError

            raise MimlensError(f"{self.kind} must be one of {', '.join(self)}, got {name!r}")
        return self[name]
