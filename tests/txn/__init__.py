"""sipha's tests: txn."""
