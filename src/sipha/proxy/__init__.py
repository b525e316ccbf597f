"""sipha.proxy: the RFC 3261 §16 stateful proxy core and the routing of docs/design.md §3, sans-IO.

:mod:`sipha.proxy.core` is the transaction user on top of :mod:`sipha.txn`;
:mod:`sipha.proxy.routing` decides where a request goes (a pure function);
:mod:`sipha.proxy.view` holds the pairs and which member is active;
:mod:`sipha.proxy.via` the RFC 3261 §18.2 / RFC 3581 Via rules.
Submodules are imported directly (``sipha.ha`` depends on ``routing``, and
the core on ``sipha.ha``).
"""
