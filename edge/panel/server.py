"""The panel's HTTP server: uvicorn inside the daemon's own event loop, as one more component.

The listening socket is bound here rather than by uvicorn, so that an address that is busy (or
not there yet, as a LAN address at boot) is retried with a clear log line while the gateway
goes on counting: the floor does not stop because the screen cannot be served. uvicorn's own
signal handling is switched off; the gateway owns SIGTERM and cancels this task, which then
ends the event streams and lets uvicorn close its connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator

import structlog
import uvicorn

from edge.config import GatewayConfig
from edge.errors import ConfigError
from edge.metrics import MetricsSources
from edge.panel.api import PanelHub, create_app
from edge.panel.auth import PinFormatError, SupervisorAuth, load_pins, lockout_path
from edge.ports import PanelFace

log = structlog.get_logger("edge.panel")

SHUTDOWN_S = 5.0


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # The gateway handles SIGTERM/SIGINT and cancels the panel; uvicorn must not take them.
        yield


def build_auth(cfg: GatewayConfig) -> SupervisorAuth:
    """The supervisor PINs from the config; a bad hash or an unreadable file is a ConfigError."""
    panel = cfg.panel
    try:
        pins = load_pins(panel.supervisor_pin_hash, panel.supervisor_id, panel.supervisor_pin_file)
    except PinFormatError as exc:
        raise ConfigError(
            [("panel.supervisor_pin_file", panel.supervisor_pin_file, str(exc))]
        ) from None
    except OSError as exc:
        raise ConfigError(
            [
                (
                    "panel.supervisor_pin_file",
                    str(panel.supervisor_pin_file),
                    f"cannot be read: {exc.strerror or exc}",
                )
            ]
        ) from None
    return SupervisorAuth(
        pins,
        max_failures=panel.pin_max_failures,
        global_max_failures=panel.pin_max_failures_global,
        # Beside the database: the one directory the service may write (StateDirectory=).
        state_path=lockout_path(cfg.store.path),
        lockout_s=panel.pin_lockout_s,
        lockout_max_s=panel.pin_lockout_max_s,
        session_s=panel.supervisor_session_s,
    )


class PanelServer:
    """The app and its server; ``run`` serves until cancelled."""

    def __init__(
        self, engine: PanelFace, cfg: GatewayConfig, metrics: MetricsSources | None = None
    ) -> None:
        self.cfg = cfg
        self.app = create_app(engine, cfg, build_auth(cfg), metrics)
        self.hub: PanelHub = self.app.state.hub
        self.started = asyncio.Event()
        self.port: int | None = None

    @property
    def url(self) -> str:
        host = self.cfg.panel.host
        shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
        shown = f"[{shown}]" if ":" in shown else shown
        return f"http://{shown}:{self.port or self.cfg.panel.port}/"

    def _bind(self) -> socket.socket:
        panel = self.cfg.panel
        family = socket.AF_INET6 if ":" in panel.host else socket.AF_INET
        sock = socket.create_server((panel.host, panel.port), family=family, backlog=64)
        sock.setblocking(False)
        return sock

    async def _bind_retrying(self) -> socket.socket:
        panel = self.cfg.panel
        failures = 0
        while True:
            try:
                return self._bind()
            except OSError as exc:
                failures += 1
                (log.error if failures == 1 else log.warning)(
                    "panel cannot listen; the gateway goes on without it and tries again",
                    host=panel.host,
                    port=panel.port,
                    error=exc.strerror or str(exc),
                    retry_s=panel.bind_retry_s,
                    attempts=failures,
                )
                await asyncio.sleep(panel.bind_retry_s)

    async def run(self) -> None:
        sock = await self._bind_retrying()
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app,
            log_config=None,
            access_log=False,
            lifespan="off",
            http="h11",
            ws="none",
            proxy_headers=False,
            server_header=False,
            timeout_graceful_shutdown=int(SHUTDOWN_S),
        )
        server = _Server(config)
        serving = asyncio.create_task(server.serve(sockets=[sock]), name="panel-http")
        log.info("panel serving", url=self.url, host=self.cfg.panel.host, port=self.port)
        self.started.set()
        try:
            await asyncio.wait({serving})
        except asyncio.CancelledError:
            self.hub.close()
            server.should_exit = True
            try:
                await asyncio.wait_for(asyncio.shield(serving), SHUTDOWN_S + 1)
            except (TimeoutError, asyncio.CancelledError):
                server.force_exit = True
                serving.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await serving
            raise
        finally:
            sock.close()
        serving.result()  # uvicorn stopped by itself: say why (an exception), else it returned


def build_panel(
    cfg: GatewayConfig, engine: PanelFace, metrics: MetricsSources | None = None
) -> PanelServer:
    """Build before starting, so a bad PIN setting stops the start-up with a config error."""
    return PanelServer(engine, cfg, metrics)


async def run_panel(engine: PanelFace, cfg: GatewayConfig) -> None:
    """The gateway component: serve the panel until cancelled."""
    await build_panel(cfg, engine).run()
