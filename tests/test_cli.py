"""Unit tests of the ``sipha`` command line (sipha.cli)."""

from __future__ import annotations

import gc
import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import trustme

from sipha import __version__
from sipha.cli import EXIT_BAD_CONFIG, EXIT_OK, main
from sipha.config import load_config, load_config_text
from sipha.configtext import render_config
from sipha.reference import render_reference
from sipha.runtime import collect_when_idle, tune_gc

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "sipha.toml"


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["--version"])
    assert caught.value.code == 0
    out, err = capsys.readouterr()
    assert out == f"sipha {__version__}\n"
    assert err == ""


def test_version_is_the_project_version() -> None:
    pyproject = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text("utf-8"))
    assert __version__ == pyproject["project"]["version"]


def test_check_config_of_a_good_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", str(EXAMPLE)]) == EXIT_OK == 0
    out, err = capsys.readouterr()
    assert err == ""
    first, rest = out.split("\n", 1)
    assert first == f"# effective configuration of {EXAMPLE}: OK"
    assert rest == render_config(load_config(EXAMPLE))
    # what is printed is itself a valid configuration, equal to the file's
    assert load_config_text(rest) == load_config(EXAMPLE)


def test_check_config_of_a_written_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "ok.toml"
    path.write_text('[monitor]\noos-check = 10\n[admin]\ntoken = "t"\n', encoding="utf-8")
    assert main(["check-config", str(path)]) == 0
    out, _ = capsys.readouterr()
    assert out.startswith(f"# effective configuration of {path}: OK\n[proxy]\n")
    assert "\noos-check = 10\n" in out
    assert "\n# token: set, not shown (a secret)\n" in out


def test_check_config_never_prints_a_secret(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Its output ends up in terminals, tickets and CI logs: a set token or HEP password is
    said to be set, never shown; an empty one is shown (it reads back as what runs)."""
    path = tmp_path / "secrets.toml"
    path.write_text(
        '[admin]\ntoken = "adm1n-T0ken"\n[trace]\nhep = "udp:127.0.0.1:9060"\nhep-password = "h3p-Secret"\n',
        encoding="utf-8",
    )
    assert main(["check-config", str(path)]) == EXIT_OK
    out, err = capsys.readouterr()
    assert "adm1n-T0ken" not in out + err
    assert "h3p-Secret" not in out + err
    assert "\n# token: set, not shown (a secret)\n" in out
    assert "\n# hep-password: set, not shown (a secret)\n" in out
    assert main(["check-config"]) == EXIT_OK
    assert '\ntoken = ""\n' in capsys.readouterr().out


def test_check_config_of_the_embedded_default(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config"]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert out == "# effective configuration of the embedded default: OK\n" + render_config(load_config(None))


def test_check_config_of_a_bad_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(
        '[proxy]\nlisten = ["sctp:1.2.3.4:5060"]\nbogus = 1\n[monitor]\noos-check = 301\noos-force = 0\n',
        encoding="utf-8",
    )
    assert main(["check-config", str(path)]) == EXIT_BAD_CONFIG == 2
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.splitlines()
    assert lines[0] == f"sipha: configuration {path} refused:"
    problems = lines[1:]
    assert len(problems) == 4
    assert all(line.startswith("  ") for line in problems)
    assert any("proxy.listen" in line and "sctp:1.2.3.4:5060" in line for line in problems)
    assert "  proxy.bogus = 1: unknown option" in problems
    assert any(line.startswith("  monitor.oos-check = 301: ") for line in problems)
    assert any(line.startswith("  monitor.oos-force = 0: ") for line in problems)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[proxy\n", "not valid TOML"),
        ('[proxy]\nrecord-route = "sip:x"\n', "proxy.record-route = 'sip:x'"),
        ("[monitor]\noos-force = 33\n", "monitor.oos-force = 33"),
        (
            '[[pair]]\nname = "a"\nprimary = "udp:h:1"\nbackup = "udp:h:1"\n',
            "primary and backup must be different",
        ),
    ],
)
def test_check_config_prints_each_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, expected: str
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text, encoding="utf-8")
    assert main(["check-config", str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert expected in err


def test_check_config_of_a_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "absent.toml"
    assert main(["check-config", str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == f"sipha: configuration {path} refused:\n  cannot read: No such file or directory\n"


def write_tls_config(directory: Path, not_after: datetime | None = None, *, key_of: str = "leaf") -> Path:
    """A configuration with a tls: listen and a trustme certificate for sip1.test."""
    ca = trustme.CA()
    for name in ("leaf", "other"):
        leaf = ca.issue_cert(f"{name}.test", not_after=not_after)
        leaf.cert_chain_pems[0].write_to_path(str(directory / f"{name}.pem"))
        leaf.private_key_pem.write_to_path(str(directory / f"{name}.key"))
    path = directory / "tls.toml"
    path.write_text(
        '[proxy]\nlisten = ["tls:127.0.0.1:5061"]\n'
        f'[tls]\ncertificate = "{directory / "leaf.pem"}"\nprivate-key = "{directory / f"{key_of}.key"}"\n',
        encoding="utf-8",
    )
    return path


def test_check_config_with_tls(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_tls_config(tmp_path)
    assert main(["check-config", str(path)]) == EXIT_OK
    out, err = capsys.readouterr()
    assert err == ""
    assert out == f"# effective configuration of {path}: OK\n" + render_config(load_config(path))
    assert f'\n[tls]\ncertificate = "{tmp_path / "leaf.pem"}"\n' in out


def test_check_config_warns_of_a_certificate_expiring_soon(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    not_after = (datetime.now(UTC) + timedelta(days=10, hours=12)).replace(tzinfo=None, microsecond=0)
    path = write_tls_config(tmp_path, not_after)
    assert main(["check-config", str(path)]) == EXIT_OK
    out, err = capsys.readouterr()
    assert out.startswith(f"# effective configuration of {path}: OK\n")
    assert err == (
        f"warning: tls.certificate = '{tmp_path / 'leaf.pem'}': expires on {not_after.date().isoformat()}, "
        "in 10 days\n"
    )


def test_check_config_refuses_an_expired_certificate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_tls_config(tmp_path, datetime(2026, 1, 1))
    assert main(["check-config", str(path)]) == EXIT_BAD_CONFIG
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (
        f"sipha: configuration {path} refused:\n"
        f"  tls.certificate = '{tmp_path / 'leaf.pem'}': expired on 2026-01-01 (not after)\n"
    )


def test_check_config_refuses_a_key_that_does_not_match(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_tls_config(tmp_path, key_of="other")
    assert main(["check-config", str(path)]) == EXIT_BAD_CONFIG
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (
        f"sipha: configuration {path} refused:\n"
        f"  tls.private-key = '{tmp_path / 'other.key'}': does not match tls.certificate "
        "(not the key of its first certificate)\n"
    )


def test_check_config_refuses_a_missing_certificate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_tls_config(tmp_path)
    (tmp_path / "leaf.pem").unlink()
    assert main(["check-config", str(path)]) == EXIT_BAD_CONFIG
    _out, err = capsys.readouterr()
    assert f"  tls.certificate = '{tmp_path / 'leaf.pem'}': cannot read: No such file or directory\n" in err


def test_no_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 0
    out, _ = capsys.readouterr()
    assert out.startswith("usage: sipha")
    assert "check-config" in out


def test_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["check-config", "--help"])
    assert caught.value.code == 0
    assert "Validate FILE" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [["no-such-command"], ["--bogus"], ["check-config", "a", "b"]])
def test_bad_arguments(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(argv)
    assert caught.value.code == 2
    assert capsys.readouterr().err.startswith("usage: sipha")


def test_config_reference_command_prints_the_generated_reference(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config-reference"]) == 0
    assert capsys.readouterr().out == render_reference()


def test_tune_gc_freezes_startup_objects_and_turns_automatic_collection_off() -> None:
    try:
        tune_gc()
        assert not gc.isenabled()
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.enable()


def test_garbage_is_collected_only_when_idle_and_not_too_often() -> None:
    assert collect_when_idle(0, now=100.0, last=0.0)
    assert not collect_when_idle(1, now=100.0, last=0.0)  # a transaction alive: scanning costs
    assert not collect_when_idle(0, now=100.0, last=50.0)  # collected less than a minute ago
