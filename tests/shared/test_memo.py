from __future__ import annotations

import gc
import sys

from shared.memo import AtomicMemo


class TestAtomicMemo:
    def test_each_key_is_computed_once_while_it_is_remembered(self) -> None:
        calls: list[int] = []

        def square(number: int) -> int:
            calls.append(number)
            return number * number

        memo = AtomicMemo(square, max_entries=10)
        assert [memo(3), memo(3), memo(4), memo(3)] == [9, 9, 16, 9]
        assert calls == [3, 4]

    def test_it_never_holds_more_than_its_size(self) -> None:
        memo = AtomicMemo(str, max_entries=100)
        for number in range(1_000):
            assert memo(number) == str(number)
            assert len(memo.values) <= 100

    def test_the_collector_has_at_most_the_dict_itself_to_walk(self) -> None:
        memo = AtomicMemo(bytes.hex, max_entries=1_000)
        for number in range(500):
            memo(number.to_bytes(4, "big"))
        # Up to CPython 3.13 the dict itself is untracked too; 3.14 tracks every dict.
        assert not any(gc.is_tracked(item) for item in gc.get_referents(memo.values))
        assert sys.version_info >= (3, 14) or not gc.is_tracked(memo.values)
