"""What an OPC UA failure means and what to do about it, in one line.

asyncua tells a refused certificate, a refused user or a server going down as a status code's
name, or not at all: node-opcua answers an untrusted client certificate by closing the secure
channel with an ERR message asyncua cannot read, and the connect ends in ``ConnectionError:
connection lost`` (or ``AssertionError``). :func:`explain` turns the exception, with the phase of
the connect it happened in, into one line that names the cause and the fix; it is stable across
retries (no channel ids, no counters), so the source logs it once until it changes.

:func:`quiet_asyncua` puts a filter on asyncua's loggers: a record with a traceback ("Publish
iteration crashed", "Exception raised while parsing message from server", ...) becomes one line
with the exception's meaning, and the same line from the same logger again within
``REPEAT_S`` is dropped (asyncua's publish loop retries every second).
"""

from __future__ import annotations

import logging
import re
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from asyncua.client.client import Client
from asyncua.ua import status_codes
from asyncua.ua.uaerrors import UaStatusCodeError

# The connect, step by step (PhasedClient records where it is); "session" is after it.
CONNECT_PHASES: Final = ("socket", "hello", "channel", "create", "activate", "session")

_UNTRUSTED: Final = frozenset(
    {
        "BadCertificateUntrusted",
        "BadSecurityChecksFailed",
        "BadCertificateInvalid",
        "BadCertificateIssuerRevocationUnknown",
        "BadCertificateRevocationUnknown",
        "BadCertificateIssuerRevoked",
        "BadCertificateRevoked",
        "BadCertificateChainIncomplete",
    }
)
_USER: Final = frozenset(
    {
        "BadIdentityTokenRejected",
        "BadIdentityTokenInvalid",
        "BadUserAccessDenied",
        "BadUserSignatureInvalid",
    }
)
_SESSION_GONE: Final = frozenset(
    {"BadSessionClosed", "BadSessionIdInvalid", "BadSessionNotActivated"}
)
_CONNECTION_GONE: Final = frozenset(
    {
        "BadConnectionClosed",
        "BadSecureChannelClosed",
        "BadSecureChannelIdInvalid",
        "BadServerNotConnected",
        "BadCommunicationError",
        "BadNotConnected",
        "BadDisconnect",
    }
)
_SHUTDOWN: Final = frozenset({"BadShutdown", "BadServerHalted"})
_TIMEOUT: Final = frozenset({"BadTimeout", "BadRequestTimeout"})

REPEAT_S: Final = 300.0
ASYNCUA_LOGGERS: Final = (
    "asyncua",
    "asyncua.client.client",
    "asyncua.client.ua_client",
    "asyncua.client.ua_client.UASocketProtocol",
    "asyncua.client.ua_client.UaClient",
    "asyncua.client.ua_session",
    "asyncua.client.ua_session.UaSession",
    "asyncua.common.subscription",
    "asyncua.common.node",
    "asyncua.uaprotocol",
    "asyncua.crypto.security_policies",
    "asyncua.crypto.uacrypto",
)


@dataclass(frozen=True, slots=True)
class Where:
    """What the explanation may name: the server, our certificate, the user."""

    endpoint: str
    secure: bool = False
    own_cert: Path | None = None
    username: str | None = None
    timeout_s: float | None = None


class PhasedClient(Client):
    """asyncua's client that remembers how far the connect got (``phase``): a closed
    connection means one thing while the secure channel opens, another in the session."""

    phase: str = "socket"

    async def connect(self, *args: Any, **kwargs: Any) -> None:
        self.phase = "socket"
        await super().connect(*args, **kwargs)
        self.phase = "session"

    async def send_hello(self, *args: Any, **kwargs: Any) -> Any:
        self.phase = "hello"
        return await super().send_hello(*args, **kwargs)

    async def open_secure_channel(self, *args: Any, **kwargs: Any) -> Any:
        self.phase = "channel"
        return await super().open_secure_channel(*args, **kwargs)

    async def create_session(self, *args: Any, **kwargs: Any) -> Any:
        self.phase = "create"
        return await super().create_session(*args, **kwargs)

    async def activate_session(self, *args: Any, **kwargs: Any) -> Any:
        self.phase = "activate"
        return await super().activate_session(*args, **kwargs)


def status_name(exc: BaseException) -> str | None:
    """The status code's name (``BadShutdown``) of an asyncua status error, else None."""
    if not isinstance(exc, UaStatusCodeError):
        return None
    name = type(exc).__name__
    if name.startswith(("Bad", "Uncertain")):
        return name
    code = getattr(exc, "code", None)
    if isinstance(code, int):
        return status_codes.get_name_and_doc(code)[0]
    return None


def _trust_fix(where: Where) -> str:
    cert = where.own_cert or Path("<certificate_dir>/own/cert.der")
    return (
        f"give the machine builder {cert} to put into the server's trust list "
        "(`edge certs` shows it and its thumbprint)"
    )


def explain_status(name: str, where: Where) -> str:
    """One line for a status code the server sent (a connect, a read, a status change)."""
    if name in _UNTRUSTED:
        return f"{where.endpoint} does not trust this gateway's certificate ({name}): " + (
            _trust_fix(where)
        )
    if name == "BadCertificateTimeInvalid":
        return (
            f"{where.endpoint} finds a certificate outside its validity period ({name}): check "
            "the clocks of the server and of the gateway, or renew the expired certificate"
        )
    if name in ("BadCertificateUriInvalid", "BadCertificateHostNameInvalid"):
        return (
            f"{where.endpoint} refuses this gateway's certificate ({name}): its application "
            "URI or host name does not match; make it again (move own/ aside, `edge certs`) "
            "and give the new one to the machine builder"
        )
    if name == "BadCertificateUseNotAllowed":
        return f"{where.endpoint} refuses the certificate's key usage ({name})"
    if name == "BadSecurityPolicyRejected":
        return (
            f"{where.endpoint} does not accept this security policy ({name}): choose a "
            "security_policy and security_mode the server offers (`edge browse` lists them)"
        )
    if name in _USER:
        if where.username:
            return (
                f"{where.endpoint} refused the user {where.username!r} ({name}): check "
                "username and the password in password_file, and that the server lets this "
                "user in"
            )
        return (
            f"{where.endpoint} refused an anonymous session ({name}): set username and "
            "password_file for a user the server knows"
        )
    if name in _SHUTDOWN:
        return (
            f"{where.endpoint} is shutting down ({name}: a restart or a power-off); the "
            "gateway connects again when it is back"
        )
    if name in _SESSION_GONE:
        return (
            f"{where.endpoint} closed the session ({name}: it restarted or ended the session); "
            "the gateway opens a new one"
        )
    if name in _CONNECTION_GONE:
        return f"{where.endpoint} closed the connection ({name}); the gateway connects again"
    if name in _TIMEOUT:
        limit = f" within timeout_s = {where.timeout_s:g} s" if where.timeout_s else ""
        return (
            f"{where.endpoint} did not answer{limit} ({name}): check the network and the "
            "server's load, or raise timeout_s"
        )
    if name == "BadTooManySessions":
        return (
            f"{where.endpoint} has no session left ({name}): close other clients or raise the "
            "server's session limit"
        )
    if name in ("BadNoSubscription", "BadSubscriptionIdInvalid", "BadTooManySubscriptions"):
        return f"{where.endpoint} dropped or refused the subscription ({name}); subscribing again"
    if name == "BadTcpEndpointUrlInvalid":
        return (
            f"{where.endpoint}: the server does not serve this endpoint path ({name}); "
            "use the endpoint URL it announces"
        )
    doc = status_codes.get_name_and_doc(getattr(status_codes.StatusCodes, name, 0))[1]
    return f"{where.endpoint}: {name}" + (f" ({doc.rstrip('.')})" if doc and name != "Good" else "")


def explain(exc: BaseException, where: Where, phase: str = "session") -> str:
    """One line: what went wrong, in the words of the cause and the fix."""
    name = status_name(exc)
    if name is not None:
        return explain_status(name, where)
    if isinstance(exc, socket.gaierror):
        return f"{where.endpoint}: the host name does not resolve ({exc.strerror}); check it"
    if isinstance(exc, ConnectionRefusedError):
        return (
            f"{where.endpoint}: nothing listens there (connection refused): is the server "
            "running, and are host and port right?"
        )
    if isinstance(exc, TimeoutError):
        return (
            explain_status("BadTimeout", where)
            if phase != "socket"
            else (
                f"{where.endpoint}: no answer to the connection within "
                f"{where.timeout_s or 0:g} s: check the address, the network and firewalls"
            )
        )
    if "No matching endpoints" in str(exc):
        # asyncua found no endpoint with the client's policy and mode among the server's.
        return (
            f"{where.endpoint} offers no endpoint with "
            + ("this security policy and mode" if where.secure else "security None")
            + ": it wants another security; set security_policy and security_mode "
            "(edge browse: --security-policy, --security-mode) to one it offers"
        )
    opaque = isinstance(exc, (ConnectionError, AssertionError, EOFError)) or (
        type(exc).__name__ == "UaError"
    )
    if opaque and where.secure and phase in ("channel", "create"):
        # node-opcua closes the channel with an ERR message asyncua misreads: the one cause
        # seen for it is our certificate missing from the server's trust list.
        return (
            f"{where.endpoint} closed the secure channel instead of opening it (most likely "
            "it does not trust this gateway's certificate yet): " + _trust_fix(where)
        )
    if isinstance(exc, ConnectionError) and phase in ("socket", "hello", "channel"):
        return (
            f"{where.endpoint} closed the connection while it was being opened "
            f"({type(exc).__name__}); check that this is an OPC UA endpoint"
        )
    if isinstance(exc, ConnectionError):
        return f"{where.endpoint}: the connection was lost ({type(exc).__name__}); connecting again"
    if isinstance(exc, OSError) and exc.strerror:
        return f"{where.endpoint}: cannot connect: {exc.strerror}"
    text = str(exc)
    if not text or text == type(exc).__name__:
        return f"{where.endpoint}: {type(exc).__name__} while {_doing(phase)}"
    return f"{where.endpoint}: {type(exc).__name__}: {text}"


def _doing(phase: str) -> str:
    return {
        "socket": "connecting",
        "hello": "greeting the server",
        "channel": "opening the secure channel",
        "create": "creating the session",
        "activate": "activating the session",
    }.get(phase, "in the session")


def short(exc: BaseException) -> str:
    """An exception as a short text without a server to name (for asyncua's own lines)."""
    name = status_name(exc)
    if name is not None:
        return name
    text = str(exc)
    return type(exc).__name__ + (f": {text}" if text and text != type(exc).__name__ else "")


class OneLine(logging.Filter):
    """asyncua's tracebacks as one line each; the same line again within REPEAT_S dropped."""

    def __init__(self) -> None:
        super().__init__()
        self._last: dict[str, tuple[str, float]] = {}

    def forget(self) -> None:
        """Say every line again once (the next of each is not a repeat)."""
        self._last.clear()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            record.msg = f"{record.getMessage()}: {short(record.exc_info[1])}"
            record.args = None
            record.exc_info = None
            record.exc_text = None
        line = record.getMessage()
        key = re.sub(r"\d+", "#", line)  # channel ids and counters do not make a new line
        now = time.monotonic()
        last = self._last.get(record.name)
        if last is not None and last[0] == key and now - last[1] < REPEAT_S:
            return False
        self._last[record.name] = (key, now)
        return True


ASYNCUA_FILTER: Final = OneLine()


def quiet_asyncua() -> None:
    """Put the filter on asyncua's loggers (once; a logger's filter sees its own records)."""
    for name in ASYNCUA_LOGGERS:
        logger = logging.getLogger(name)
        if ASYNCUA_FILTER not in logger.filters:
            logger.addFilter(ASYNCUA_FILTER)
