"""The live transactions by key, in shards: no single dictionary ever holds them all.

A proxy at 3,000 calls/s keeps some 200,000 transactions alive (Timers J, K, L and M hold
each for up to 32 s), and inserts and deletes some 12,000 of them a second.  A Python
dictionary with that churn rebuilds its whole table whenever its free slots run out (the
deleted ones are not reused until then): measured, 48 ms for 207,000 entries, once every
few seconds, during which the event loop reads nothing and the receive queue fills.  Split
in :data:`SHARDS` dictionaries, each rebuild is 1/64 of that (under a millisecond), for the
same total work (``bench/core.py --stalls`` reports the slowest step).

A key's shard is chosen by its second element (the branch, or the Request-URI of an RFC
2543 key: :mod:`sipha.txn.keys`), a string whose hash Python keeps: no tuple hash is
computed twice.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Final

from sipha.txn.keys import TransactionKey

if TYPE_CHECKING:
    from sipha.txn.machines import Transaction

SHARDS: Final = 64
"""Dictionaries the transactions are spread over (a power of two: the shard is a mask)."""
_MASK: Final = SHARDS - 1


class TransactionTable:
    """A dictionary of the live transactions by key, spread over :data:`SHARDS` dictionaries."""

    __slots__ = ("_count", "_shards")

    def __init__(self) -> None:
        self._shards: list[dict[TransactionKey, Transaction]] = [{} for _ in range(SHARDS)]
        self._count = 0

    def get(self, key: TransactionKey) -> Transaction | None:
        """The transaction with ``key``, or None."""
        return self._shards[hash(key[1]) & _MASK].get(key)

    def add(self, key: TransactionKey, transaction: Transaction) -> None:
        """Keep ``transaction`` under ``key`` (replacing whatever was there)."""
        shard = self._shards[hash(key[1]) & _MASK]
        if key not in shard:
            self._count += 1
        shard[key] = transaction

    def remove(self, key: TransactionKey) -> None:
        """Forget ``key`` (KeyError if absent)."""
        del self._shards[hash(key[1]) & _MASK][key]
        self._count -= 1

    def __contains__(self, key: TransactionKey) -> bool:
        return key in self._shards[hash(key[1]) & _MASK]

    def __len__(self) -> int:
        return self._count

    def values(self) -> Iterator[Transaction]:
        """Every transaction, shard after shard (do not change the table meanwhile)."""
        for shard in self._shards:
            yield from shard.values()

    def as_dict(self) -> dict[TransactionKey, Transaction]:
        """A copy, as one dictionary (inspection: tests, status pages)."""
        merged: dict[TransactionKey, Transaction] = {}
        for shard in self._shards:
            merged.update(shard)
        return merged

    def largest_shard(self) -> int:
        """How many transactions the fullest shard holds (what one rebuild costs)."""
        return max(len(shard) for shard in self._shards)
