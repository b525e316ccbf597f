"""The effective configuration as TOML text: what ``sipha check-config`` prints.

Every option is spelled out with its value, defaults included, so that what runs is
never a guess.  Secrets (``admin.token``, ``trace.hep-password``) are the exception:
a set one is printed as a comment saying so, never its value.
"""

from __future__ import annotations

from pydantic import BaseModel

from sipha.config import Config, is_secret


def render_config(config: Config) -> str:
    """The effective configuration as TOML, every option spelled out."""
    lines: list[str] = []
    for section_name in ("proxy", "monitor", "admin", "dns", "limits", "tls"):
        section: BaseModel = getattr(config, section_name)
        lines.append(f"[{section_name}]")
        lines.extend(_render_fields(section))
        lines.append("")
    for pair in config.pair:
        lines.append("[[pair]]")
        lines.extend(_render_fields(pair))
        lines.append("")
    return "\n".join([*lines, "[trace]", *_render_fields(config.trace), ""])


def _render_fields(model: BaseModel) -> list[str]:
    rendered: list[str] = []
    for name, info in type(model).model_fields.items():
        value = getattr(model, name)
        key = info.alias or name
        if isinstance(value, BaseModel):
            inner = ", ".join(
                f"{sub.alias or sub_name} = {toml_value(getattr(value, sub_name))}"
                for sub_name, sub in type(value).model_fields.items()
            )
            rendered.append(f"{key} = {{ {inner} }}")
        elif value and is_secret(key):
            # Never printed: check-config's output ends up in terminals, tickets and CI logs.
            rendered.append(f"# {key}: set, not shown (a secret)")
        else:
            rendered.append(f"{key} = {toml_value(value)}")
    return rendered


def toml_value(value: object) -> str:
    """``value`` as TOML (a string, number, boolean or list of them)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    return '"' + "".join(_toml_char(char) for char in str(value)) + '"'


def _toml_char(char: str) -> str:
    """One character of a TOML basic string: quotes, backslashes and controls escaped."""
    if char in '"\\':
        return "\\" + char
    if ord(char) < 0x20 or char == "\x7f":  # noqa: PLR2004 - C0 controls (TOML v1.0 basic strings)
        return f"\\u{ord(char):04X}"
    return char
