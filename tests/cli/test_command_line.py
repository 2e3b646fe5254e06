"""The ``edge`` command line as a technician types it: ``-c`` before or after the command, and a
command without its subcommand names the choices."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from edge.cli import build_parser, main
from edge.store.store import Store


def _commands(parser: argparse.ArgumentParser) -> argparse._SubParsersAction | None:  # type: ignore[type-arg]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    return None


def _tree(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> list[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    found = [(path, parser)]
    commands = _commands(parser)
    if commands is not None:
        for name, sub in commands.choices.items():
            found += _tree(sub, (*path, name))
    return found


TREE = _tree(build_parser())
WITH_CONFIG = [
    path for path, p in TREE if _commands(p) is None and any(a.dest == "config" for a in p._actions)
]
WITH_COMMANDS = [path for path, p in TREE if _commands(p) is not None]
WITHOUT_CONFIG = [
    path
    for path, p in TREE
    if _commands(p) is None and not any(a.dest == "config" for a in p._actions)
]
# positional arguments a command needs
REQUIRED = {
    ("backup",): ["copy.db"],
    ("browse",): ["opc.tcp://127.0.0.1:4840"],
    ("trace",): ["A-100"],
}


def edge(argv: list[str]) -> int:
    """``edge`` in this process; argparse's own refusals exit (SystemExit) with their code."""
    try:
        return main(argv)
    except SystemExit as exc:
        code = exc.code
    return code if isinstance(code, int) else 1


def forms(path: tuple[str, ...], config: str) -> list[list[str]]:
    """Every place -c can go: after the command, before it, and between the levels."""
    extra = REQUIRED.get(path, [])
    out = [[*path, *extra, "-c", config], ["-c", config, *path, *extra]]
    out += [[*path[:i], "--config", config, *path[i:], *extra] for i in range(1, len(path))]
    return out


def test_every_command_is_covered() -> None:
    assert ("status",) in WITH_CONFIG
    assert ("outbox", "list") in WITH_CONFIG
    assert ("relay", "stats") in WITH_CONFIG
    assert ("check",) in WITH_CONFIG
    assert ("demo",) in WITHOUT_CONFIG
    assert ("outbox",) in WITH_COMMANDS
    assert ("relay",) in WITH_COMMANDS


@pytest.mark.parametrize("path", WITH_CONFIG, ids=" ".join)
def test_config_before_or_after_the_command(
    path: tuple[str, ...], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A config that is not there: every form reaches the command, which names that file."""
    missing = str(tmp_path / "where-it-is-not.toml")
    for argv in forms(path, missing):
        assert edge(argv) == 2, argv
        err = capsys.readouterr().err
        assert f"invalid configuration in {missing}" in err, (argv, err)
        assert "unrecognized arguments" not in err


def test_config_before_the_command_is_the_one_used(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "edge.db"
    store = Store(db)
    store.open()
    store.close()
    capsys.readouterr()  # what opening it logged
    config = tmp_path / "edge.toml"
    config.write_text(f'[gateway]\nedge_id = "wc-9"\nwork_center = "WC9"\n[store]\npath = "{db}"\n')
    for argv in (
        ["status", "--json", "-c", str(config)],
        ["-c", str(config), "status", "--json"],
    ):
        assert edge(argv) == 0, argv
        status = json.loads(capsys.readouterr().out)
        assert status["edge_id"] == "wc-9"
        assert status["database"]["path"] == str(db)
    for argv in (["outbox", "-c", str(config), "count"], ["-c", str(config), "outbox", "count"]):
        assert edge(argv) == 0, argv
        assert "0 pending" in capsys.readouterr().out


def test_config_given_twice_or_to_a_command_without_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = str(tmp_path / "a.toml"), str(tmp_path / "b.toml")
    assert edge(["-c", a, "status", "-c", b]) == 2
    assert f"edge status: -c/--config given twice, as {a} and {b}: give it once" in (
        capsys.readouterr().err
    )
    assert edge(["-c", a, "outbox", "-c", a, "count", "-c", a]) == 2  # the same file: fine
    assert f"invalid configuration in {a}" in capsys.readouterr().err
    for path in WITHOUT_CONFIG:
        assert edge(["-c", a, *path, *REQUIRED.get(path, [])]) == 2, path
        name = "edge " + " ".join(path)
        assert f"{name}: -c/--config is not one of its options" in capsys.readouterr().err


@pytest.mark.parametrize("path", WITH_COMMANDS, ids=lambda p: " ".join(("edge", *p)))
def test_a_command_without_its_subcommand_names_the_choices(
    path: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    parser = dict(TREE)[path]
    commands = _commands(parser)
    assert commands is not None
    name = " ".join(("edge", *path))
    for argv in ([*path], [*path, "-c", "x.toml"], [*path, "lst"]):
        assert edge(argv) == 2, argv
        captured = capsys.readouterr()
        assert captured.out == ""
        err = captured.err
        assert f"{name} needs one of these commands:" in err, err
        for action in commands._get_subactions():
            assert f"  {action.dest}" in err
            assert str(action.help) in err
        assert f"{name} <command> --help" in err
        assert "the following arguments are required" not in err
        assert "Traceback" not in err
    edge([*path, "lst"])
    assert f"{name}: no command 'lst'" in capsys.readouterr().err
