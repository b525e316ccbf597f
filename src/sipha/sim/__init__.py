"""sipha.sim: simulated SIP servers and ``sipha demo``, for the tests and for watching sipha work.

* :mod:`sipha.sim.uas`: a pair member's sans-IO side (transactions and a UAS core).
* :mod:`sipha.sim.server`: the simulated server on sockets (``sipha simulate-server``).
* :mod:`sipha.sim.outbound`: its outbound proxy given by name (the pool's FQDN), per RFC 3263.
* :mod:`sipha.sim.demo`: ``sipha demo``: the proxy, two simulated servers and the dashboard.

Importing this package imports none of them.
"""
