"""SIP tracing (docs/tracing.md): every message sipha receives and sends, to a HEP collector or the log.

:mod:`sipha.trace.hep` encodes HEPv3 packets (no I/O); :mod:`sipha.trace.tracer` is
what the driver calls for each message when tracing is on; :mod:`sipha.trace.export`
wires ``[trace]`` into the application (start, reload, /status, /metrics).
"""
