"""sipha.admin: the admin HTTP surface (docs/design.md §5 ``[admin]``).

* :mod:`sipha.admin.server`: aiohttp app and server: /healthz, /status, /metrics, the dashboard,
  /events (and its follow stream), POST /reload and /drain.
* :mod:`sipha.admin.control`: what POST /reload and /drain do (SIGHUP's and SIGTERM's paths).
* :mod:`sipha.admin.status`: the /status and /healthz content, read at request time.
* :mod:`sipha.admin.metrics`: the Prometheus collector (reads the live state at scrape time).
* :mod:`sipha.admin.instance`: with ``[proxy] workers``, the counters of every worker, asked over
  the hand-over channel and summed: /status and /metrics report the instance.
* :mod:`sipha.admin.telemetry`: what the app records for it (HA event history, counts).

Importing this package imports none of them (aiohttp is loaded only where it is used).  It is a
leaf of the wiring: it reads the running application through :class:`sipha.admin.status.AdminSource`
and never imports it (``sipha demo``, which runs both, is :mod:`sipha.sim.demo`).
"""
