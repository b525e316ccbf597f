"""``[[pair]] mode`` at start (docs/design.md §2.2): its values, its refusal, what it reaches."""

from __future__ import annotations

import pytest

from sipha.assembly import build_monitor, build_view, carry_over_pairs, monitor_settings
from sipha.config import ConfigError, load_config_text
from sipha.configtext import render_config
from sipha.sip.address import Address

LISTEN = [Address("UDP", "127.0.0.9", 5060)]


def pair(name: str, n: int, *lines: str) -> str:
    head = f'[[pair]]\nname = "{name}"\nprimary = "udp:127.0.0.{n}:5070"\nbackup = "udp:127.0.0.{n}:5080"\n'
    return head + "".join(f"{line}\n" for line in lines)


def test_the_default_is_primary_backup() -> None:
    config = load_config_text(pair("a", 1))
    assert config.pair[0].mode == "primary-backup"
    monitor = build_monitor(config, build_view(config, LISTEN))
    assert monitor.pairs["a"].mode == "primary-backup"
    assert 'mode = "primary-backup"' in render_config(config)


@pytest.mark.parametrize("value", ["active-activ", "Active-Active", "both", ""])
def test_an_unknown_mode_is_refused_naming_key_value_and_the_allowed_values(value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config_text(pair("a", 1, f'mode = "{value}"'))
    assert caught.value.problems == [
        f"pair.0.mode = {value!r}: Input should be 'primary-backup' or 'active-active'"
    ]


def test_a_mode_that_is_not_a_string_is_refused() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config_text(pair("a", 1, "mode = 2"))
    [problem] = caught.value.problems
    assert problem.startswith("pair.0.mode = 2: ")
    assert "'primary-backup' or 'active-active'" in problem


def test_active_active_with_serving_and_a_fallback_reaches_the_view_and_the_monitor() -> None:
    config = load_config_text(
        pair("a", 1, 'mode = "active-active"', "serving = true", 'fallback = "b"')
        + pair("b", 2, 'mode = "active-active"')
        + pair("c", 3)
    )
    view = build_view(config, LISTEN)
    assert [view.pairs[name].mode for name in "abc"] == ["active-active", "active-active", "primary-backup"]
    assert view.fallback_of("a") == "b"
    assert view.spread("a") == view.members("a")  # both until a monitor says otherwise
    assert view.spread("c") == ()
    monitor = build_monitor(config, view)
    assert [monitor.pairs[name].mode for name in "abc"] == [
        "active-active",
        "active-active",
        "primary-backup",
    ]
    assert 'mode = "active-active"' in render_config(config)


def test_a_reload_that_changes_the_mode_keeps_the_pair_and_takes_the_new_mode() -> None:
    before = load_config_text(pair("a", 1))
    after = load_config_text(pair("a", 1, 'mode = "active-active"'))
    old = build_monitor(before, build_view(before, LISTEN))
    old.start(0.0)
    new = build_monitor(after, build_view(after, LISTEN))
    assert carry_over_pairs(old, new, monitor_settings(after)) == ["a"]
    assert new.pairs["a"] is old.pairs["a"]
    assert new.pairs["a"].mode == "active-active"
