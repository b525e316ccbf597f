"""What to write instead, for an option an operator brings from the product sipha replaces or from Kamailio.

A migrating operator writes the names they know (docs/migrating.md).  sipha refuses an
unknown option at start like any other (no option is accepted and ignored), and for these
names the refusal also says where the same job is done in sipha, or why it has no meaning.
"""

from __future__ import annotations

from typing import Final

_GENESYS: Final = "a Genesys SIP Proxy option"
_KAMAILIO: Final = "a Kamailio dispatcher parameter"

HINTS: Final[dict[str, str]] = {
    # The seed product's options (docs/migrating.md §1).
    "applications": f"{_GENESYS}: sipha reads no Configuration Server; give each pair a [[pair]] table "
    "(name, primary, backup)",
    "serving-sipserver": f"{_GENESYS}: set serving = true in the [[pair]] table of that pair",
    "oos-check": f"{_GENESYS}: it is [monitor] oos-check",
    "oos-force": f"{_GENESYS}: it is [monitor] oos-force",
    "sip-address": f"{_GENESYS}: it is [proxy] sip-address",
    "resolve-host": f"{_GENESYS}: it is [proxy] resolve-host",
    "overload-ctrl-dialog-rate": f"{_GENESYS}: it is [proxy] overload-ctrl-dialog-rate",
    "sip-ip-tos": f"{_GENESYS}: it is [proxy] sip-ip-tos",
    # Kamailio's dispatcher (docs/migrating.md §2).
    "ds_ping_interval": f"{_KAMAILIO}: the OPTIONS period is [monitor] oos-check",
    "ds_ping_method": f"{_KAMAILIO}: sipha always probes with OPTIONS (docs/design.md §2)",
    "ds_ping_reply_codes": f"{_KAMAILIO}: the codes that count as alive are [monitor] alive-codes",
    "ds_probing_threshold": f"{_KAMAILIO}: a member is lost when it answers none of a period's OPTIONS "
    "([monitor] oos-check; docs/design.md §2)",
    "ds_probing_mode": f"{_KAMAILIO}: sipha probes the active member always, both while none is known",
    "ds_inactive_threshold": f"{_KAMAILIO}: the first alive answer makes a member active again",
    "ds_list_file": f"{_KAMAILIO}: the members are the [[pair]] tables' primary and backup",
    "fr_timer": "a Kamailio tm parameter: a silent member is suspected after [monitor] failover-timeout",
}


def hint(key: str) -> str:
    """`` (where that is done in sipha)`` for a known foreign option name in ``key`` (dotted), else ""."""
    found = HINTS.get(key.rsplit(".", 1)[-1].lower())
    return "" if found is None else f" ({found})"
