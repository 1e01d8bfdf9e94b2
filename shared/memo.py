"""Per-process memo for pure functions on the hot paths, sized for a city's worth of keys."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class AtomicMemo(Generic[K, V]):
    """`function(key)`, remembered in a plain dict that is emptied when it reaches `max_entries`.

    For keys and values that hold no other objects (str, bytes, int), CPython keeps such a dict
    out of the cyclic garbage collector, where `functools.lru_cache`'s linked entries would add
    four tracked objects a key to every full collection's pause. The price is a burst of misses
    after each emptying, once per `max_entries` distinct keys.
    """

    def __init__(self, function: Callable[[K], V], max_entries: int) -> None:
        self.function = function
        self.max_entries = max_entries
        self.values: dict[K, V] = {}

    def __call__(self, key: K) -> V:
        try:
            return self.values[key]
        except KeyError:
            pass
        value = self.function(key)
        if len(self.values) >= self.max_entries:
            self.values.clear()
        self.values[key] = value
        return value
