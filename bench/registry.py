"""A tiny name -> builder registry, as in timm's ``create_model``: one place per model kind.

Encoders and LLMs register themselves with a decorator in their family's module; everything
else builds them through :meth:`Registry.get`/``create`` by name, and an unknown name is an
error that lists the valid ones.
"""
from __future__ import annotations

import difflib
from typing import Callable, Dict, Generic, List, TypeVar

T = TypeVar("T")


class UnknownNameError(KeyError, ValueError):
    """An unknown model name; the message lists every valid name."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind
        self._items: Dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            self._items[name] = obj
            return obj

        return deco

    def add(self, name: str, obj: T) -> T:
        return self.register(name)(obj)

    def get(self, name: str) -> T:
        if name not in self._items:
            close = difflib.get_close_matches(str(name), self._items, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}.{hint} Valid {self.kind} names: {', '.join(self.names())}"
            )
        return self._items[name]

    def names(self) -> List[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items
