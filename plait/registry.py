"""Registries: a name -> ``"module:attr"`` table, imported on first use.

Every pluggable table in plait (model architectures, CLIP towers, training tasks, Hugging Face
families, CLI commands) is one of these, so they all read, fail and extend the same way::

    TASKS = Registry("task", {"lm": "plait.training.tasks.lm:LMTask"})
    TASKS.get("lm")        # imports plait.training.tasks.lm, returns LMTask
    TASKS.get("lmm")       # ValueError: unknown task 'lmm' (known: lm)

Strings rather than objects keep ``import plait`` light (a vision task costs a text-only run
nothing) and make the tables importable from anywhere without cycles;
``tests/test_registries.py`` imports every entry of every registry, so a stale string fails
the suite instead of a user's run.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from types import ModuleType
from typing import Any


class Registry:
    """Names of one kind of thing -> ``"package.module:Attribute"`` strings."""

    def __init__(self, kind: str, entries: dict[str, str]):
        self.kind = kind
        self._entries: dict[str, str] = {}
        for name, target in entries.items():
            self.register(name, target)

    def register(self, name: str, target: str) -> None:
        """Add ``name``; ``target`` is ``"module:attr"`` (checked for form now, imported later)."""
        module, sep, attr = target.partition(":")
        if not (module and sep and attr):
            raise ValueError(f"{self.kind} {name!r}: target must be 'module:attr', got {target!r}")
        self._entries[name] = target

    def unregister(self, name: str) -> None:
        """Remove ``name`` (a plugin's or a test's entry); unknown names are an error."""
        self.target(name)
        del self._entries[name]

    def target(self, name: str) -> str:
        if name not in self._entries:
            raise ValueError(f"unknown {self.kind} {name!r} (known: {', '.join(self)})")
        return self._entries[name]

    def module(self, name: str) -> ModuleType:
        """The module that holds ``name``'s object, imported."""
        return importlib.import_module(self.target(name).partition(":")[0])

    def get(self, name: str) -> Any:
        """The object registered as ``name`` (its module is imported the first time)."""
        attr = self.target(name).partition(":")[2]
        return getattr(self.module(name), attr)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self._entries!r})"
