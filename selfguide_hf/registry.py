"""Named registries (filters, training methods), like PEFT's: configs refer to entries by name.

One small class, so every registry refuses a second entry under a taken name
and answers an unknown name with the known ones.
"""

from __future__ import annotations

from typing import Generic, TypeVar

__all__ = ["Registry"]

T = TypeVar("T")


class Registry(dict[str, T], Generic[T]):
    """A ``dict`` of named entries of one ``kind`` ("filter", "method"); ``error`` is raised for unknown names."""

    def __init__(self, kind: str, error: type[Exception] = ValueError) -> None:
        super().__init__()
        self.kind = kind
        self.error = error

    def add(self, name: str, entry: T) -> T:
        """Register ``entry`` under ``name``; registering the very same entry again is a no-op."""
        if name in self and self[name] is not entry:
            raise ValueError(f"a {self.kind} named {name!r} is already registered")
        self[name] = entry
        return entry

    def lookup(self, name: str) -> T:
        try:
            return self[name]
        except KeyError:
            raise self.error(f"unknown {self.kind} {name!r}; known: {sorted(self)}") from None
