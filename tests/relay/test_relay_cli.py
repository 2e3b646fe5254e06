"""``edge relay``: its config file (the example, and every problem named), and the tools a
person uses beside the relay: doubts, dead letters, latency statistics."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from edge.cli import main
from edge.errors import ConfigError
from edge.relay.db import SqliteDb
from edge.relay.kpi import kpi_body, latency_table, percentile
from edge.relay.ledger import Ledger
from tests.relay.builders import posting

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "config" / "relay.example.toml"


def config_file(tmp_path: Path, text: str | None = None) -> Path:
    secret = tmp_path / "sap-password"
    secret.write_text("pw\n")
    body = (text or EXAMPLE.read_text()).replace("/etc/edge-relay/sap-password", str(secret))
    body = body.replace("sqlite:////var/lib/edge-relay/ledger.db", f"sqlite:///{tmp_path}/l.db")
    path = tmp_path / "relay.toml"
    path.write_text(body)
    return path


def test_the_example_config_is_valid(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["relay", "check-config", "-c", str(config_file(tmp_path))]) == 0
    out = capsys.readouterr().out
    assert "enterprise 'acme'" in out
    assert "umh/v1/acme/+/+/+/+" in out
    assert "erp     sap" in out


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (("concurrency = 8", "concurrency = 0"), "relay.concurrency"),
        (("lease_s = 120.0", "lease_s = 120.0\nleese_s = 3"), "relay.leese_s"),
        (('system = "sap"', 'system = "oracle"'), "erp"),
        (("timeout_s = 30.0", 'timeout_s = "30"'), "erp.sap.timeout_s"),
        (('timezone = "UTC"', 'timezone = "Europe/Berlim"'), "erp.sap.timezone"),
        (('share_group = "erp-relay"', 'share_group = "a/b"'), "relay.share_group"),
    ],
)
def test_a_bad_config_names_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], change: tuple[str, str], field: str
) -> None:
    text = EXAMPLE.read_text()
    assert change[0] in text
    path = config_file(tmp_path, text.replace(change[0], change[1], 1))
    assert main(["relay", "check-config", "-c", str(path)]) == 2
    assert field in capsys.readouterr().err


def test_a_missing_secret_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = config_file(tmp_path)
    (tmp_path / "sap-password").unlink()
    assert main(["relay", "check-config", "-c", str(path)]) == 2
    assert "erp.password_file" in capsys.readouterr().err


def test_percentiles() -> None:
    assert percentile([1, 2, 3, 4], 0.5) == 2
    assert percentile([1, 2, 3, 4], 0.95) == 4
    assert percentile([7], 0.5) == 7
    assert kpi_body([5, 7, 90], 3600.0, "sap", 1) == {
        "metric": "confirmation_latency",
        "erp": "sap",
        "window_s": 3600.0,
        "count": 3,
        "p50_ms": 7,
        "p95_ms": 90,
        "max_ms": 90,
        "ts_ms": 1,
    }
    table = latency_table([("A", "sap", 10), ("A", "sap", 30), ("B", "file", 5)])
    assert table == [
        {"work_center": "A", "erp": "sap", "count": 2, "p50_ms": 10, "p95_ms": 30, "max_ms": 30},
        {"work_center": "B", "erp": "file", "count": 1, "p50_ms": 5, "p95_ms": 5, "max_ms": 5},
    ]


def test_doubts_dead_letters_and_stats_from_the_ledger(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = config_file(tmp_path)
    doubtful, refused, done = posting(1), posting(1, order="2"), posting(1, order="3")
    behind = posting(2, order="2")  # held behind the rejected #1 of its operation

    async def fill() -> None:
        ledger = await Ledger(await SqliteDb(tmp_path / "l.db").open()).open()
        now = 1_800_000_000_000
        for p in (doubtful, refused, done, behind):
            await ledger.accept(p, now)
        await ledger.claim("r", now, 60_000, 10, 30_000)
        await ledger.in_doubt(doubtful.idem_key, "r", "no answer from SAP", now)
        await ledger.rejected(refused.idem_key, "r", "Order 2 is not released", "RU/170", now)
        await ledger.mark_held(refused, now)
        from edge.relay.service import wall_ms

        await ledger.posted(done.idem_key, "r", "sap", {"confirmation_count": "1"}, wall_ms(), 900)
        await ledger.close()

    asyncio.run(fill())
    cfg = ["-c", str(path)]
    assert main(["relay", "doubt", *cfg]) == 0
    out = capsys.readouterr().out
    assert doubtful.idem_key in out
    assert "no answer from SAP" in out
    assert main(["relay", "failed", *cfg, "--json"]) == 0
    row, held = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert (row["idem_key"], row["code"]) == (refused.idem_key, "RU/170")
    assert (held["idem_key"], held["status"], held["code"], held["held_by"]) == (
        behind.idem_key,
        "new",
        "RELAY/HELD",
        refused.idem_key,
    )
    assert main(["relay", "failed", *cfg]) == 0
    out = capsys.readouterr().out
    assert "held behind a rejected one of their operation (1):" in out
    assert behind.idem_key in out
    assert "Order 2 is not released" in out
    assert main(["relay", "stats", *cfg, "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["latency"] == [
        {
            "work_center": "PRESS07",
            "erp": "sap",
            "count": 1,
            "p50_ms": 900,
            "p95_ms": 900,
            "max_ms": 900,
        }
    ]
    assert stats["ledger"] == {"in_doubt": 1, "rejected": 1, "posted": 1, "new": 1}
    # a person resolves the doubt and resubmits the rejection
    assert main(["relay", "doubt", *cfg, "--resolve", doubtful.idem_key, "--repost"]) == 1
    capsys.readouterr()
    assert (
        main(
            [
                "relay",
                "doubt",
                *cfg,
                "--resolve",
                doubtful.idem_key,
                "--posted",
                "confirmation_group=0000010000,confirmation_count=00000001",
                "--by",
                "anna",
            ]
        )
        == 0
    )
    assert "posted" in capsys.readouterr().out
    assert main(["relay", "failed", *cfg, "--resubmit", refused.idem_key, "--by", "ben"]) == 0
    assert "new" in capsys.readouterr().out
    assert main(["relay", "failed", *cfg, "--resubmit", refused.idem_key, "--by", "ben"]) == 1
    assert "not rejected" in capsys.readouterr().err
    assert main(["relay", "stats", *cfg]) == 0
    assert "PRESS07" in capsys.readouterr().out


def test_the_example_with_orders_down_is_valid(tmp_path: Path) -> None:
    from edge.relay.config import load_relay_config

    text = EXAMPLE.read_text().replace("[dispatch]\nenabled = false", "[dispatch]\nenabled = true")
    cfg = load_relay_config(config_file(tmp_path, text))
    assert cfg.dispatch.enabled
    assert cfg.dispatch.source is not None
    assert cfg.dispatch.source.system == "file"
    assert [t.work_center for t in cfg.dispatch.work_centers] == ["PRESS07"]
    broken = text.replace('work_center = "PRESS07" ', 'work_center = "PRESS 07"')
    with pytest.raises(ConfigError, match=r"dispatch\.work_centers"):
        load_relay_config(config_file(tmp_path, broken))


def test_a_lease_shorter_than_an_erp_call_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = EXAMPLE.read_text().replace("lease_s = 120.0", "lease_s = 60.0")
    assert main(["relay", "check-config", "-c", str(config_file(tmp_path, text))]) == 2
    assert "lease_s = 60 must be at least 3 x erp.timeout_s (90 s)" in capsys.readouterr().err
