"""sipha.proxy: the RFC 3261 §16 stateful proxy core and the routing of docs/design.md §3, sans-IO.

:mod:`sipha.proxy.core` is the transaction user on top of :mod:`sipha.txn`, in
the order of §16 (validate, preprocess routes, route, forward; responses;
CANCEL), with drain, reload and overload control;
:mod:`sipha.proxy.rules` the §16.3-§16.7 rules as pure functions;
:mod:`sipha.proxy.context` the response context and its (state, input) table;
:mod:`sipha.proxy.responses` the live contexts, their timers and the table's operations;
:mod:`sipha.proxy.failover` what happens to requests when a pair member fails (docs/design.md §2);
:mod:`sipha.proxy.monitoring` the pair monitor's probes and news;
:mod:`sipha.proxy.lifecycle` the overload token bucket and the calls up (drain);
:mod:`sipha.proxy.settings` the core's settings and counters;
:mod:`sipha.proxy.routing` decides where a request goes (a pure function);
:mod:`sipha.proxy.view` holds the pairs and which member is active;
:mod:`sipha.proxy.via` the RFC 3261 §18.2 / RFC 3581 Via rules.
Submodules are imported directly: this package imports nothing itself.
"""
