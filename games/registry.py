"""Things of one kind by name, the one way every part of the project registers and looks up what a
user may add: environments, image sources, agents, scripted players, training recipes.

>>> from games.registry import Registry
>>> colours = Registry("colour")
>>> colours.register("red", (255, 0, 0))
(255, 0, 0)
>>> colours["red"], "blue" in colours, list(colours)
((255, 0, 0), False, ['red'])

A name ``"module:name"`` imports ``module`` first (found on the Python path, then in the current
folder), which registers ``name`` at its foot, as Gymnasium's environment ids do: a user's own
file needs no import by hand. An unknown name raises :class:`UnknownNameError` listing the known
ones; a name already taken is refused unless ``replace=True``.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable, Iterator, Mapping
from typing import Generic, TypeVar

T = TypeVar("T")


class UnknownNameError(KeyError, ValueError):
    """A name that is not registered (a ``KeyError`` and a ``ValueError``: a bad value)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class Registry(Mapping[str, T], Generic[T]):
    """Named entries of one ``kind`` (the word used in messages); ``check(name, entry)`` raises
    on an entry of the wrong type."""

    def __init__(self, kind: str, check: Callable[[str, T], None] | None = None):
        self.kind, self._check = kind, check
        self._entries: dict[str, T] = {}

    def register(self, name: str, entry: T, *, replace: bool = False) -> T:
        """Registers ``entry`` as ``name`` and returns it."""
        if not isinstance(name, str) or not name or ":" in name:
            raise ValueError(f"a {self.kind} name must be a non-empty string without ':', "
                             f"got {name!r}")
        if self._check is not None:
            self._check(name, entry)
        if name in self._entries and self._entries[name] is not entry and not replace:
            raise ValueError(f"{self.kind} {name!r} is already registered; pass replace=True "
                             f"to replace it")
        self._entries[name] = entry
        return entry

    def unregister(self, name: str) -> None:
        """Forgets ``name`` (a test's temporary entry, say)."""
        self._entries.pop(name, None)

    def resolve(self, name: str) -> str:
        """The registered name of ``name``: ``"module:name"`` imports ``module`` and gives
        ``name``; a plain name is itself."""
        if not isinstance(name, str) or ":" not in name:
            return name
        module_name, _, registered_name = name.partition(":")
        if os.getcwd() not in sys.path:  # a user's file beside their config
            sys.path.append(os.getcwd())
        try:
            importlib.import_module(module_name)
        except ImportError as error:
            raise UnknownNameError(f"{self.kind} {name!r}: cannot import module {module_name!r} "
                                   f"({error}); is its folder on the Python path?") from error
        return registered_name

    def __getitem__(self, name: str) -> T:
        registered_name = self.resolve(name)
        try:
            return self._entries[registered_name]
        except (KeyError, TypeError):  # TypeError: an unhashable name
            raise UnknownNameError(f"unknown {self.kind} {name!r}; known: "
                                   f"{', '.join(sorted(self._entries)) or 'none'}") from None

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self)})"
