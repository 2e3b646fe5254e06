"""The ``edge`` command as maintenance staff use it: readable reports, exit codes, no tracebacks."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from simulators.broker import find_mosquitto, free_port

ROOT = Path(__file__).resolve().parents[2]


def edge(*args: str, cwd: Path = ROOT, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def example_without_tls(tmp_path: Path) -> Path:
    """config/example.toml with its TLS files left out (they are the plant's to provide)."""
    text = (ROOT / "config" / "example.toml").read_text()
    text = re.sub(r"(?m)^tls_(ca|cert|key)_file = .*$", "", text)
    path = tmp_path / "edge.toml"
    path.write_text(text)
    return path


def test_check_config_accepts_the_example(tmp_path: Path) -> None:
    result = edge("check-config", "-c", str(example_without_tls(tmp_path)))
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stdout
    assert "work center PRESS07" in result.stdout


def test_files_the_config_names_are_checked_with_their_key_and_path(tmp_path: Path) -> None:
    """The shipped example names TLS files that are not on this machine: check-config said OK
    and edge run then died with a traceback naming no file (and systemd restarted it)."""
    example = ROOT / "config" / "example.toml"
    for command in ("check-config", "run"):
        result = edge(command, "-c", str(example))
        assert result.returncode == 2, result
        assert "Traceback" not in result.stderr
        for key, path in (
            ("mqtt.tls_ca_file", "/etc/edge-gateway/tls/ca.crt"),
            ("mqtt.tls_cert_file", "/etc/edge-gateway/tls/wc-press-07.crt"),
            ("mqtt.tls_key_file", "/etc/edge-gateway/tls/wc-press-07.key"),
        ):
            assert f"{key} = '{path}': no such file" in result.stderr, result.stderr
    # a file that is there but is no certificate, a folder, an unreadable password file
    ca, folder, secret = tmp_path / "ca.crt", tmp_path / "certs", tmp_path / "password"
    ca.write_text("not a certificate\n")
    folder.mkdir()
    secret.write_text("s3cret\n")
    secret.chmod(0)
    text = example.read_text()
    text = text.replace('"/etc/edge-gateway/tls/ca.crt"', f'"{ca}"')
    text = text.replace('"/etc/edge-gateway/tls/wc-press-07.crt"', f'"{folder}"')
    text = text.replace(
        '# password_file = "/etc/edge-gateway/mqtt.password"', f'password_file = "{secret}"'
    )
    bad = tmp_path / "edge.toml"
    bad.write_text(text)
    result = edge("check-config", "-c", str(bad))
    assert result.returncode == 2
    assert f"mqtt.tls_ca_file = '{ca}': not a CA certificate" in result.stderr
    assert f"mqtt.tls_cert_file = '{folder}': is not a file" in result.stderr
    if os.geteuid() != 0:  # root reads any file
        assert f"mqtt.password_file = '{secret}': cannot be read" in result.stderr
    assert "s3cret" not in result.stderr + result.stdout
    # edge check's broker check says the same instead of a traceback
    from edge.check import check_broker
    from edge.config import load_config

    found = check_broker(load_config(bad, env={}))
    assert not found.ok
    assert "mqtt.tls_ca_file" in found.detail
    assert str(ca) in found.detail


def test_bad_config_is_a_readable_report_with_exit_code_2(tmp_path: Path) -> None:
    bad = tmp_path / "edge.toml"
    bad.write_text(
        '[gateway]\nedge_id = "wc-1"\nwork_center = "WC1"\n'
        '[engine]\nmax_batch = "many"\n'
        '[[counting.sources]]\nname = "press"\nkind = "tota"\n'
    )
    for command in ("check-config", "run"):
        result = edge(command, "-c", str(bad))
        assert result.returncode == 2, result
        assert "Traceback" not in result.stderr
        assert "engine.max_batch" in result.stderr
        assert "'many'" in result.stderr
        assert "kind" in result.stderr
        assert "'tota'" in result.stderr


def test_missing_config_file_exit_code_2(tmp_path: Path) -> None:
    result = edge("check-config", "-c", str(tmp_path / "nope.toml"))
    assert result.returncode == 2
    assert "nope.toml" in result.stderr
    assert "Traceback" not in result.stderr


def test_verify_on_a_missing_database_fails_cleanly(tmp_path: Path) -> None:
    result = edge("verify", "--db", str(tmp_path / "none.db"))
    assert result.returncode == 1
    assert "no such database" in result.stderr


STORY = (
    "central sends master data v1 over MQTT",
    "master data v1 from central applied",
    "central sends dispatch list v1 over MQTT",
    "dispatch list v1 from central applied: 4711/0020",
    "central got the gateway's receipt for dispatch list v1",
    "dispatched -> setup",
    "setup -> running",
    "REASON PENDING",
    "reason M01",
    "micro-stop",
    "confirmation #1 partial",
    "ERP verdict on confirmation #1: posted",
    'ERP verdict on confirmation #2: rejected: "Order 4711 is not released"',
    "confirmation #2 sent again with a new idempotency key",
    "(supervisor:",
    "ERP verdict on confirmation #2: posted",
    "confirmation #4 final",
    "ERP verdict on confirmation #4: posted",
    "running -> completed",
    "posted as ERP confirmation 0000010000, counter 00000001",
)
SUMMARY = (
    "SAP yield 64.000 / scrap 4.000 vs. gateway counted good 64 / scrap 4: they match; "
    "posted twice: none",
    "outbox: 0 business messages waiting",
    "projections equal the journal replay: yes",
)


def assert_story(out: str) -> None:
    """The demo's story as a new user reads it, in order (also checked by
    tests/cli/test_demo_panel.py, which runs the demo with --stay)."""
    for seen in (*STORY, *SUMMARY):
        assert seen in out, f"{seen!r} missing from the demo output:\n{out}"
    # the story in order: rejected, then resent, then posted
    rejected = out.index("ERP verdict on confirmation #2: rejected")
    resent = out.index("confirmation #2 sent again")
    assert rejected < resent < out.index("ERP verdict on confirmation #2: posted")
    for c in range(1, 5):
        assert re.search(rf"#{c} (partial|final  ) yield .* posted as ERP confirmation", out), out


@pytest.mark.slow  # tests/cli/test_demo_panel.py runs the same story (with --stay) and checks it
def test_demo_runs_an_order_to_its_final_confirmation(tmp_path: Path) -> None:
    """The README's first command, what a new user sees: mosquitto, central (a simulated
    dispatcher, the real ERP relay, a SAP stand-in) and the gateway."""
    try:
        find_mosquitto()
    except FileNotFoundError as exc:  # pragma: no cover - the scripts install it as root
        pytest.skip(str(exc))
    started = time.monotonic()
    result = edge("demo", "--data-dir", str(tmp_path / "demo"), timeout=90)
    took = time.monotonic() - started
    assert result.returncode == 0, result.stdout + result.stderr
    assert_story(result.stdout)
    assert "Traceback" not in result.stderr
    assert took < 60, f"the demo took {took:.0f} s"
    assert "the operator panel is up: open http://127.0.0.1:" in result.stdout
    assert result.stdout.splitlines()[-1].startswith("edge demo: PASS: ")


def test_demo_without_mosquitto_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from simulators import broker
    from simulators.demo import run_demo

    monkeypatch.setattr(broker, "CANDIDATES", (str(tmp_path / "no-mosquitto-here"),))
    assert asyncio.run(run_demo(tmp_path / "demo", keep=False)) == 1
    out, err = capsys.readouterr()
    assert out.splitlines()[-1] == "edge demo: FAIL: mosquitto is not installed"
    assert "mosquitto is not installed" in err
    assert "./scripts/demo" in err
    assert "sudo apt-get install mosquitto" in err


def test_demo_without_the_simulators_says_what_is_missing(tmp_path: Path) -> None:
    """The gateway never imports the simulators; without them ``edge demo`` says so plainly."""
    hide = "import sys; sys.modules['simulators'] = None; from edge.cli import main; "
    result = subprocess.run(
        [sys.executable, "-c", hide + "sys.exit(main(sys.argv[1:]))", "demo", "--data-dir",
         str(tmp_path / "demo")],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr
    assert "the demo runs on the simulators" in result.stderr
    assert "not installed here" in result.stderr
    assert "no module named simulators" in result.stderr
    assert "./scripts/demo" in result.stderr
    assert not (tmp_path / "demo").exists()


@pytest.mark.parametrize("args", [["--version"], ["--help"]])
def test_help_and_version(args: list[str]) -> None:
    assert edge(*args).returncode == 0


@pytest.mark.parametrize(
    "args",
    [
        ["check-config", "-c", "{example}"],
        ["mqtt-acl", "-c", str(ROOT / "config" / "example.toml")],
        ["contract", "--check"],
        ["--help"],
        ["status", "--json", "--db", "{db}"],
    ],
    ids=["check-config", "mqtt-acl", "contract", "help", "status"],
)
def test_a_reader_that_goes_away_is_no_traceback(args: list[str], tmp_path: Path) -> None:
    """`edge check-config | head -1`: the pipe is closed before the command writes."""
    db = tmp_path / "edge.db"
    if "{example}" in args:  # its TLS files left out: they are not on this machine
        args = [a.replace("{example}", str(example_without_tls(tmp_path))) for a in args]
    if "{db}" in args:
        from edge.store.store import Store

        store = Store(db)
        store.open()
        store.close()
        args = [a.replace("{db}", str(db)) for a in args]
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone: every write fails with EPIPE
    try:
        result = subprocess.run(
            [sys.executable, "-m", "edge", *args],
            cwd=ROOT,
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
        )
    finally:
        os.close(write_end)
    assert "Traceback" not in result.stderr, result.stderr
    assert "BrokenPipeError" not in result.stderr, result.stderr
    # as a command killed by SIGPIPE (argparse's --help exits before its output is flushed)
    assert result.returncode == (0 if args == ["--help"] else 141)


def test_demo_interrupted_in_the_story_fails_with_its_reason(tmp_path: Path) -> None:
    """Ctrl-C before the story's end: everything stops, the last line says FAIL and why, and
    the exit code is the interrupt's."""
    try:
        find_mosquitto()
    except FileNotFoundError as exc:  # pragma: no cover - the scripts install it as root
        pytest.skip(str(exc))
    child = subprocess.Popen(
        [sys.executable, "-m", "edge", "demo", "--data-dir", str(tmp_path / "demo"),
         "--panel-port", str(free_port())],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    try:
        assert child.stdout is not None
        seen = []
        for line in child.stdout:
            seen.append(line)
            if "central sends master data" in line:
                break
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == 130, "".join(seen) + out + err
    assert out.splitlines()[-1] == "edge demo: FAIL: interrupted (Ctrl-C) before the story's end"
    assert "Traceback" not in err
