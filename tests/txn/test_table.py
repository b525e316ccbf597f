"""The transaction table (sipha.txn.table): a dictionary in shards, so that no rebuild of one
stops the event loop for long (48 ms for 207,000 transactions in one dictionary)."""

from __future__ import annotations

from sipha.txn import Transaction, TransactionLayer
from sipha.txn.keys import client_key
from sipha.txn.table import SHARDS, TransactionTable
from tests.txn.support import UPSTREAM_UDP, request


def _server(branch: str) -> Transaction:
    """A real server transaction (the compiled table checks what it holds)."""
    transaction = TransactionLayer().receive_request(request("OPTIONS", branch=branch), UPSTREAM_UDP, 0.0)
    assert transaction is not None
    return transaction


SERVER = _server("z9hG4bK-table-server")
CLIENT = _server("z9hG4bK-table-other")


def test_a_busy_proxy_s_transactions_are_spread_over_every_shard() -> None:
    """What one dictionary rebuild costs is bounded by the fullest shard, not by the table."""
    table = TransactionTable()
    calls = 20_000
    for call in range(calls):
        table.add(("server", f"z9hG4bK-{call}-a1b2c3", "127.0.0.1", "5060", "INVITE"), SERVER)
        table.add(client_key(f"z9hG4bK{call:x}.proxy", "INVITE"), CLIENT)
    assert len(table) == 2 * calls
    assert table.largest_shard() < 2 * (2 * calls // SHARDS)


def test_the_table_is_a_dictionary() -> None:
    table = TransactionTable()
    key = ("server", "z9hG4bK-table-1", "192.0.2.10", "5060", "OPTIONS")
    assert key not in table
    assert table.get(key) is None
    table.add(key, SERVER)
    table.add(key, SERVER)  # replaced, counted once
    assert key in table
    assert table.get(key) is SERVER
    assert len(table) == 1
    other = client_key("z9hG4bK-table-1", "OPTIONS")  # the same branch: the same shard
    table.add(other, CLIENT)
    assert (table.get(other), len(table)) == (CLIENT, 2)
    assert sorted(map(id, table.values())) == sorted([id(SERVER), id(CLIENT)])
    assert table.as_dict() == {key: SERVER, other: CLIENT}
    table.remove(key)
    table.remove(other)
    assert (len(table), table.get(key), list(table.values())) == (0, None, [])
