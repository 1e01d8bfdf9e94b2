"""Per-process memo for pure functions on the hot paths, sized for a city's worth of keys."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class AtomicMemo(Generic[K, V]):
    """`function(key)`, remembered in a plain dict that is emptied when it reaches `max_entries`.

    `functools.lru_cache` links its entries through lists, four objects a key that every full
    collection of the cyclic garbage collector walks; this is one dict, and on CPython up to
    3.13 a dict of keys and values that hold no other objects (str, bytes, int) is not tracked
    at all (3.14 tracks every dict, still as one object). The price is a burst of misses after
    each emptying, once per `max_entries` distinct keys.
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
