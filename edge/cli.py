"""The ``edge`` command: run the gateway, the demo, and the tools maintenance staff need."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import os
import pwd
import sys
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import NoReturn

# First of ours, so that structlog is imported the lean way edge.logging does it (see there).
from edge.logging import configure_logging

# isort: split
from edge import __version__, ops, report, trace
from edge.config import (
    DEFAULT_CONFIG_PATH,
    GatewayConfig,
    config_path,
    config_report,
    file_problems,
    load_config,
    rules_from_config,
)
from edge.errors import ComponentFailed, ConfigError, StoreError, StoreRefused
from edge.relay import cli as relay_cli

EXIT_OK, EXIT_FAILED, EXIT_CONFIG, EXIT_INTERRUPTED = 0, 1, 2, 130
EXIT_USAGE = 2  # a command line argparse cannot take, as argparse itself exits
# The database needs a person (lost, damaged, unusable): systemd does not restart on it.
EXIT_REFUSED = 3
EXIT_BROKEN_PIPE = 141  # what a shell shows for a command killed by SIGPIPE (128 + 13)


def _load(args: argparse.Namespace) -> GatewayConfig:
    cfg = load_config(config_path(args.config))
    configure_logging(cfg.gateway.log_level, cfg.gateway.log_json)
    return cfg


def _usable_files(cfg: GatewayConfig, path: Path) -> None:
    """A config naming a file the gateway cannot use is refused here, naming key and path."""
    problems = file_problems(cfg)
    if problems:
        raise ConfigError(problems, source=str(path))


def cmd_run(args: argparse.Namespace) -> int:
    from edge.app import run_gateway

    cfg = _load(args)
    _usable_files(cfg, config_path(args.config))
    asyncio.run(run_gateway(cfg, new_database=args.new_database))
    return EXIT_OK


DEMO_MODULE = "simulators.demo"
DEMO_MISSING = """\
edge demo: the demo runs on the simulators (the Python package `simulators`: the central
  simulator, the OPC UA press, the private broker), and they are not installed here
  (no module named {missing}). The gateway and its other commands do not need them.
  Install the whole package (its wheel carries them: pip install . in a checkout), or run
  ./scripts/demo in a checkout."""

DemoRunner = Callable[..., Coroutine[object, object, int]]


def _demo_runner() -> DemoRunner | None:
    """The demo's ``run_demo``, looked up by name: the demo and the simulators it drives are
    scenery around the gateway, and nothing in ``edge`` imports them. None (and a message that
    says what is missing) when they are not installed."""
    try:
        module = importlib.import_module(DEMO_MODULE)
    except ModuleNotFoundError as exc:
        if exc.name not in ("simulators", DEMO_MODULE):
            raise  # the demo is there but something it needs is not: show that as it is
        print(DEMO_MISSING.format(missing=exc.name), file=sys.stderr)
        return None
    runner: DemoRunner = module.run_demo
    return runner


def cmd_demo(args: argparse.Namespace) -> int:
    run_demo = _demo_runner()
    if run_demo is None:
        return EXIT_FAILED
    configure_logging("warning", json=False)
    return asyncio.run(
        run_demo(Path(args.data_dir), keep=args.keep, stay=args.stay, panel_port=args.panel_port)
    )


def cmd_check_config(args: argparse.Namespace) -> int:
    path = config_path(args.config)
    cfg = load_config(path)
    _usable_files(cfg, path)
    rules = rules_from_config(cfg)
    print(f"{path}: OK")
    print(
        f"  gateway {cfg.gateway.edge_id}, work center {cfg.gateway.work_center}, "
        f"time zone {cfg.gateway.timezone}"
    )
    print(f"  database {cfg.store.path} (synchronous={cfg.store.synchronous})")
    for src in rules.sources:
        role = "counts" if src.authoritative else "cross-check only"
        print(f"  counter {src.name}: {src.kind.value}, {src.signal.value}, {src.bits} bit, {role}")
    if cfg.mqtt.enabled:
        print(
            f"  mqtt {cfg.mqtt.host}:{cfg.mqtt.port}, root "
            f"{cfg.mqtt.root_for(cfg.gateway.work_center)}"
        )
    else:
        print("  mqtt not enabled: local-only")
    for link in cfg.sources.opcua:
        nodes = len(link.counters) + sum(
            1 for n in (link.state_node, link.mode_node, link.alarm_node) if n
        )
        print(
            f"  opcua {link.name}: {link.endpoint}, {link.template}, {nodes} nodes, "
            f"security {link.security_policy}/{link.security_mode}"
        )
    for mb in cfg.sources.modbus:
        where = f"{mb.host}:{mb.port}" if mb.transport == "tcp" else str(mb.device)
        bits = "state bits" if mb.state is not None else "no state bits"
        print(
            f"  modbus {mb.name}: {mb.transport} {where}, unit {mb.unit_id}, "
            f"{len(mb.counters)} counters, {bits}, every {mb.poll_interval_ms:g} ms"
        )
    for gp in cfg.sources.gpio:
        pins = ", ".join(f"{c.counter} on pin {c.pin}" for c in gp.counters)
        print(f"  gpio {gp.name} ({cfg.gpio.pin_factory}): {pins}")
    if cfg.operator.buttons:
        actions = ", ".join(f"{b.name}={b.action}" for b in cfg.operator.buttons)
        print(f"  buttons: {actions}")
    light = cfg.operator.stacklight
    if light is not None:
        where = f"coils of {light.modbus_source}" if light.output == "modbus" else "gpio"
        print(f"  stack light on {where}: {', '.join(light.lamps)}")
    if cfg.panel.enabled:
        print(f"  panel http://{cfg.panel.host}:{cfg.panel.port}/ (and /metrics)")
    if rules.machine_hours:
        print("  machine hours counted" + (": service" if rules.service else ""))
        for interval in rules.service:
            print(f"    {interval.name} every {interval.every} {interval.measure.value}")
    if rules.badges:
        print(f"  {len(rules.badges)} badges")
    md = rules.master_data
    print(
        f"  {len(md.stop_reasons)} stop reasons, {len(md.scrap_reasons)} scrap reasons, "
        f"{len(md.alarm_reasons)} alarm mappings, {len(rules.shifts)} shifts"
    )
    return EXIT_OK


def cmd_verify(args: argparse.Namespace) -> int:
    from edge.store.replay import verify_all
    from edge.store.store import Store

    db = Path(args.db) if args.db else _load(args).store.path
    if not db.exists():
        print(f"{db}: no such database", file=sys.stderr)
        return EXIT_FAILED
    store = Store(db)
    store.open(boot=False, migrate_schema=False)
    try:
        checks = verify_all(store)
        journal = store.journal_count()
    finally:
        store.close()
    failed = [c for c in checks if c.differences]
    for check in failed:
        print(f"{db}: {len(check.differences)} rows differ: {check.what}:")
        for d in check.differences[:20]:
            print(f"  {d.table} {d.key!r}")
    if failed:
        return EXIT_FAILED
    for check in checks:
        print(f"{db}: ok: {check.what}")
    print(f"{db}: the projections equal the replay of {journal} journal entries")
    return EXIT_OK


def cmd_browse(args: argparse.Namespace) -> int:
    from edge.sources.opcua_browse import Security, browse

    configure_logging("error", json=False)
    policy, mode = args.security_policy, args.security_mode
    if (policy == "None") != (mode == "None"):
        print(
            "edge browse: --security-policy and --security-mode go together: both None, or a "
            f"policy with Sign or SignAndEncrypt (given {policy}/{mode})",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    if (args.certificate is None) != (args.private_key is None):
        print("edge browse: --certificate and --private-key go together", file=sys.stderr)
        return EXIT_CONFIG
    if args.password_file is not None and not args.user:
        print("edge browse: --password-file needs --user", file=sys.stderr)
        return EXIT_CONFIG
    security = Security(
        policy=policy,
        mode=mode,
        certificate_dir=Path(args.certificate_dir),
        certificate=Path(args.certificate) if args.certificate else None,
        private_key=Path(args.private_key) if args.private_key else None,
        server_certificate=Path(args.server_certificate) if args.server_certificate else None,
        user=args.user,
        password_file=Path(args.password_file) if args.password_file else None,
    )
    try:
        owner = _owner_for(args.service_user)
    except KeyError:
        print(f"edge browse: no user {args.service_user!r} on this machine", file=sys.stderr)
        return EXIT_USAGE
    before = _made_by(security.certificate_dir) if policy != "None" else []
    try:
        return asyncio.run(
            browse(
                args.endpoint,
                text_filter=args.filter,
                max_depth=args.depth,
                include_server=args.server,
                timeout_s=args.timeout,
                security=security,
            )
        )
    finally:
        if before:  # the gateway's certificate or a rejected server certificate, made as root
            _give_away(security.certificate_dir, before, owner)


def cmd_check(args: argparse.Namespace) -> int:
    from edge.check import run_checks

    cfg = load_config(config_path(args.config))
    configure_logging("error", json=False)
    return run_checks(cfg, service_user=args.service_user)


def _made_by(cert_dir: Path) -> list[Path]:
    """What is there before the certificate directory is used: [the first missing parent] when
    it does not exist yet, else what it holds (and itself)."""
    missing = [d for d in (cert_dir, *cert_dir.parents) if not d.exists()]
    if missing:
        return [missing[-1]]
    return [cert_dir, *cert_dir.rglob("*")]


def _owner_for(name: str | None) -> pwd.struct_passwd | None:
    """Who the files made as root go to: ``name``, or the service user when it exists."""
    from edge.check import SERVICE_USER

    if name is not None:
        return pwd.getpwnam(name)  # KeyError: no such user
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(SERVICE_USER)
    except KeyError:
        return None


def _give_away(cert_dir: Path, before: list[Path], owner: pwd.struct_passwd | None) -> list[Path]:
    """Give what was made in (or for) ``cert_dir`` since ``before`` to ``owner``; what was made."""
    if len(before) == 1 and before[0] != cert_dir:  # the directory was made, from this parent
        top = before[0]
        made = [top, *top.rglob("*")] if top.exists() else []
    else:
        old = set(before)
        made = [p for p in (cert_dir, *cert_dir.rglob("*")) if p not in old]
    if owner is not None:
        for path in made:
            os.chown(path, owner.pw_uid, owner.pw_gid, follow_symlinks=False)
    return made


def cmd_certs(args: argparse.Namespace) -> int:
    from edge.check import SERVICE_USER
    from edge.sources.opcua_security import application_uri, ensure_certificate, thumbprint

    cfg = load_config(config_path(args.config))
    if not cfg.sources.opcua:
        print("no [[sources.opcua]] in the config: no OPC UA certificate needed")
        return EXIT_OK
    # As root the new files go to the service user: it must read its key (0600) and write
    # rejected/; root's would stop the gateway at its first secure connect.
    try:
        owner = _owner_for(args.service_user)
    except KeyError:
        print(f"edge certs: no user {args.service_user!r} on this machine", file=sys.stderr)
        return EXIT_USAGE
    for link in cfg.sources.opcua:
        before = _made_by(link.certificate_dir)
        cert, key = ensure_certificate(link.certificate_dir, application_uri(link.name))
        print(f"opcua {link.name}: certificate {cert} (key {key})")
        made = _give_away(link.certificate_dir, before, owner)
        if owner is not None and made:
            print(f"  made for the service user {owner.pw_name}: {', '.join(map(str, made))}")
        elif made and os.geteuid() == 0:
            print(
                f"  made as root (no user {SERVICE_USER} here): give them to the user the "
                f"gateway runs as, chown -R <user>: {link.certificate_dir}"
            )
        print(f"  application URI {application_uri(link.name)}")
        print(f"  SHA-1 thumbprint {thumbprint(cert.read_bytes())}")
        print("  give the certificate to the server's administrator to trust this gateway;")
        print(f"  trusted server certificates go to {link.certificate_dir / 'trusted'}/")
    return EXIT_OK


def cmd_contract(args: argparse.Namespace) -> int:
    from edge.sync import asyncapi

    return asyncapi.main(["--out", args.out, *(["--check"] if args.check else [])])


def cmd_panel_pin(args: argparse.Namespace) -> int:
    import getpass

    from edge.pin import PinFormatError, check_pin_format, hash_pin

    if args.stdin or not sys.stdin.isatty():
        pin = sys.stdin.readline().strip()
    else:
        pin = getpass.getpass("supervisor PIN (4-12 digits): ")
        if getpass.getpass("the same PIN again: ") != pin:
            print("edge panel-pin: the two PINs differ; nothing written", file=sys.stderr)
            return EXIT_FAILED
    try:
        check_pin_format(pin)
    except PinFormatError as exc:
        print(f"edge panel-pin: {exc}", file=sys.stderr)
        return EXIT_FAILED
    line = hash_pin(pin)
    if args.id:
        print(f"{args.id} {line}")
        print("# a line for the file named by [panel] supervisor_pin_file", file=sys.stderr)
    else:
        print(f'supervisor_pin_hash = "{line}"')
        print("# put this line into the [panel] section of the config", file=sys.stderr)
    return EXIT_OK


class EdgeParser(argparse.ArgumentParser):
    """argparse's parser; a command that is not one of the choices lists them in words."""

    def error(self, message: str) -> NoReturn:
        commands = _commands(self)
        if commands is not None and message.startswith(f"argument {commands.dest}: invalid"):
            given = message.split("invalid choice: ", 1)[-1].split(" (choose", 1)[0]
            self.exit(EXIT_USAGE, f"{self.prog}: no command {given}\n{choices_text(self)}")
        super().error(message)


def _commands(parser: argparse.ArgumentParser) -> argparse._SubParsersAction | None:  # type: ignore[type-arg]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    return None


def choices_text(parser: argparse.ArgumentParser) -> str:
    """The commands ``parser`` takes, one a line with what it does."""
    commands = _commands(parser)
    assert commands is not None
    named = [(a.dest, a.help or "") for a in commands._get_subactions()]
    width = max(len(name) for name, _ in named)
    lines = [f"{parser.prog} needs one of these commands:"]
    lines += [f"  {name:<{width}}  {text}" for name, text in named]
    lines.append(f"{parser.prog} <command> --help shows a command's options.")
    return "\n".join(lines) + "\n"


OUTER_CONFIG = "config_before_"  # dests of -c/--config given before a (sub)command
CONFIG_HELP = f"config file (default: $EDGE_CONFIG or {DEFAULT_CONFIG_PATH})"


def _finish(parser: argparse.ArgumentParser, depth: int = 0) -> None:
    """Every parser with commands: without one it names them (exit 2); and it takes
    ``-c/--config`` before the command too, for the command's own (:func:`_outer_config`)."""
    commands = _commands(parser)
    if commands is None:
        parser.set_defaults(command_prog=parser.prog)
        return
    commands.required = False

    def choose(_args: argparse.Namespace) -> int:
        print(choices_text(parser), end="", file=sys.stderr)
        return EXIT_USAGE

    parser.set_defaults(fn=choose)
    parser.add_argument(
        "-c",
        "--config",
        dest=f"{OUTER_CONFIG}{depth}",
        default=argparse.SUPPRESS,
        help=f"{CONFIG_HELP}; before or after the command",
    )
    for sub in commands.choices.values():
        _finish(sub, depth + 1)


def _outer_config(args: argparse.Namespace) -> str | None:
    """``edge -c f status`` is ``edge status -c f``; None, or what is wrong with the line."""
    outer = {k: v for k, v in vars(args).items() if k.startswith(OUTER_CONFIG)}
    for key in outer:
        delattr(args, key)
    prog = getattr(args, "command_prog", None)
    if not outer or prog is None:  # no command given: its choices are shown instead
        return None
    if not hasattr(args, "config"):
        return f"{prog}: -c/--config is not one of its options (see {prog} --help)"
    given = sorted({*outer.values(), *([args.config] if args.config is not None else [])})
    if len(given) > 1:
        return f"{prog}: -c/--config given twice, as {' and '.join(given)}: give it once"
    args.config = given[0]
    return None


def build_parser() -> argparse.ArgumentParser:
    parser = EdgeParser(
        prog="edge", description="Work-center edge gateway for manufacturing order management."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    def with_config(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("-c", "--config", help=CONFIG_HELP)
        return p

    run = with_config(sub.add_parser("run", help="run the gateway"))
    run.add_argument(
        "--new-database",
        action="store_true",
        help="start an empty database where a previous one is missing, empty or was moved "
        "aside as damaged (history, numbers and idempotency keys start over); an existing "
        "database is never replaced",
    )
    run.set_defaults(fn=cmd_run)
    demo = sub.add_parser("demo", help="run the gateway on a simulated press and tell the story")
    demo.add_argument("--data-dir", default="demo-data", help="where the demo database goes")
    demo.add_argument("--keep", action="store_true", help="keep the previous demo database")
    demo.add_argument(
        "--stay",
        action="store_true",
        help="after the story keep running: work the next orders on the panel (Ctrl-C stops)",
    )
    demo.add_argument(
        "--panel-port", type=int, default=None, help="the panel's port (default: the config's)"
    )
    demo.set_defaults(fn=cmd_demo)
    with_config(
        sub.add_parser("check-config", help="read and validate the config, print a summary")
    ).set_defaults(fn=cmd_check_config)
    verify = with_config(
        sub.add_parser(
            "verify", help="check that the projections and checkpoints equal the journal replay"
        )
    )
    verify.add_argument("--db", help="database file (default: from the config)")
    verify.set_defaults(fn=cmd_verify)
    browse = sub.add_parser(
        "browse", help="print an OPC UA server's address space to find the counter nodes"
    )
    browse.add_argument("endpoint", help="e.g. opc.tcp://192.168.0.10:4840")
    browse.add_argument("--filter", help="show only branches whose name or node id contains it")
    browse.add_argument("--depth", type=int, default=8, help="how deep to go (default 8)")
    browse.add_argument("--server", action="store_true", help="include the Server object")
    browse.add_argument("--timeout", type=float, default=5.0, help="seconds (default 5)")
    # The same security as [[sources.opcua]]: a server with only secure endpoints.
    browse.add_argument(
        "--security-policy",
        choices=("None", "Basic256Sha256", "Aes128_Sha256_RsaOaep", "Aes256_Sha256_RsaPss"),
        default="None",
        help="as security_policy of [[sources.opcua]] (default None)",
    )
    browse.add_argument(
        "--security-mode",
        choices=("None", "Sign", "SignAndEncrypt"),
        default="None",
        help="as security_mode of [[sources.opcua]] (default None)",
    )
    browse.add_argument(
        "--certificate-dir",
        default="/var/lib/edge-gateway/pki",
        help="the gateway's certificate (own/) and the trusted server certificates (trusted/), "
        "as certificate_dir (default /var/lib/edge-gateway/pki)",
    )
    browse.add_argument("--certificate", help="our certificate (DER or PEM) instead of own/")
    browse.add_argument("--private-key", help="the key of --certificate (PEM)")
    browse.add_argument(
        "--server-certificate",
        help="the server's certificate (DER or PEM) to trust instead of the trusted/ folder",
    )
    browse.add_argument(
        "--service-user",
        help="who a certificate made in --certificate-dir goes to (default: as root, "
        "edge-gateway when it exists)",
    )
    browse.add_argument("--user", help="user name, as username")
    browse.add_argument("--password-file", help="a file whose first line is the password")
    browse.set_defaults(fn=cmd_browse)
    check = with_config(
        sub.add_parser(
            "check",
            help="check every link in the config: database, clock, broker, OPC UA nodes "
            "(it only reads)",
        )
    )
    check.add_argument(
        "--service-user",
        help="judge the files for this user (default: as root, edge-gateway when it exists, "
        "the user of systemd/edge-gateway.service)",
    )
    check.set_defaults(fn=cmd_check)
    certs = with_config(
        sub.add_parser("certs", help="make (once) and show the OPC UA application certificate")
    )
    certs.add_argument(
        "--service-user",
        help="the user the new files go to (default: as root, edge-gateway when it exists)",
    )
    certs.set_defaults(fn=cmd_certs)
    contract = sub.add_parser(
        "contract", help="write the MQTT contract (AsyncAPI and JSON Schemas) from the models"
    )
    contract.add_argument("--out", default="contract", help="the contract directory")
    contract.add_argument(
        "--check", action="store_true", help="write nothing; fail if the files are out of date"
    )
    contract.set_defaults(fn=cmd_contract)
    pin = sub.add_parser(
        "panel-pin", help="hash a supervisor PIN for the panel (prints the line for the config)"
    )
    pin.add_argument(
        "--id", help="a supervisor id: print '<id> <hash>' for [panel] supervisor_pin_file"
    )
    pin.add_argument(
        "--stdin", action="store_true", help="read the PIN from the first line of stdin"
    )
    pin.set_defaults(fn=cmd_panel_pin)
    ops.register(sub)
    report.register(sub)
    trace.register(sub)
    relay_cli.register(sub)
    _finish(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        wrong = _outer_config(args)
        if wrong is not None:
            print(wrong, file=sys.stderr)
            return EXIT_USAGE
        code: int = args.fn(args)
        sys.stdout.flush()  # a closed pipe shows here, not at exit
    except ConfigError as err:
        print(config_report(err), file=sys.stderr)
        return EXIT_CONFIG
    except StoreRefused as err:
        print(f"edge: {err}", file=sys.stderr)
        return EXIT_REFUSED
    except (StoreError, ComponentFailed) as err:
        print(f"edge: {err}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`edge ... | head`): nothing more to say, and nothing to
        # flush at exit either (that would fail the same way).
        with contextlib.suppress(OSError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    return code


if __name__ == "__main__":
    sys.exit(main())
