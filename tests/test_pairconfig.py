"""``[[pair]] fallback`` at start (docs/deployment.md): refused naming key, value and what is allowed."""

from __future__ import annotations

import pytest

from sipha.assembly import build_view
from sipha.config import ConfigError, load_config_text
from sipha.sip.address import Address


def pairs(*specs: tuple[str, str]) -> str:
    """``[[pair]]`` sections: (name, fallback) each, members 127.0.0.N:5070/5080."""
    text = ""
    for n, (name, fallback) in enumerate(specs, start=1):
        text += (
            f'[[pair]]\nname = "{name}"\nprimary = "udp:127.0.0.{n}:5070"\nbackup = "udp:127.0.0.{n}:5080"\n'
        )
        text += f'fallback = "{fallback}"\n' if fallback else ""
    return text


def problems_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config_text(text)
    return caught.value.problems


def test_a_chain_of_fallbacks_is_accepted_and_reaches_the_view() -> None:
    config = load_config_text(pairs(("a", "b"), ("b", "c"), ("c", "")))
    assert [pair.fallback for pair in config.pair] == ["b", "c", ""]
    view = build_view(config, [Address("UDP", "127.0.0.9", 5060)])
    assert (view.fallback_of("a"), view.fallback_of("b"), view.fallback_of("c")) == ("b", "c", None)


def test_an_unknown_fallback_is_refused() -> None:
    assert problems_of(pairs(("a", "nowhere"), ("b", ""))) == [
        "pair.0.fallback = 'nowhere': no pair has this name; allowed: another pair's name ('b')"
    ]


def test_a_pair_that_is_its_own_fallback_is_refused() -> None:
    assert problems_of(pairs(("a", "a"), ("b", ""))) == [
        "pair.0.fallback = 'a': a pair cannot be its own fallback; allowed: another pair's name ('b')"
    ]


def test_a_cycle_is_refused_at_each_pair_in_it() -> None:
    problems = problems_of(pairs(("a", "b"), ("b", "c"), ("c", "a"), ("d", "a")))
    assert problems == [
        f"pair.{i}.fallback = {fallback!r}: fallbacks form a cycle ({cycle}); allowed: a chain that "
        "ends at a pair without fallback"
        for i, fallback, cycle in [
            (0, "b", "a -> b -> c -> a"),
            (1, "c", "b -> c -> a -> b"),
            (2, "a", "c -> a -> b -> c"),
        ]
    ]
