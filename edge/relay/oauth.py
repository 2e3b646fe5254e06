"""OAuth 2 client credentials (RFC 6749 §4.4) for the ERP adapters: one token, fetched when
needed, renewed a minute before it expires or when the ERP answers 401.

Microsoft's identity platform (D365) and SAP's authorization servers (S/4HANA Cloud, BTP) both
take ``grant_type=client_credentials`` with the client's id and secret as form fields and
answer ``{"access_token", "token_type", "expires_in"}``; D365 also wants ``scope``
(``<resource>/.default``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from edge.relay.erp import Transient

# A token is renewed this long before the server says it expires (clock skew, slow requests).
EARLY_S = 60.0


class TokenRefused(Exception):
    """The authorization server refused the client (wrong id or secret, no such tenant): no
    retry will help until the configuration is corrected."""


@dataclass(frozen=True, slots=True)
class ClientCredentials:
    token_url: str
    client_id: str
    client_secret: str
    scope: str | None = None


class TokenSource:
    """Hands out a bearer token; one fetch at a time, however many callers wait for it."""

    def __init__(
        self,
        credentials: ClientCredentials,
        client: httpx.AsyncClient,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._cred = credentials
        self._client = client
        self._clock = clock
        self._token: str | None = None
        self._until = 0.0
        self._lock = asyncio.Lock()

    def forget(self) -> None:
        """The ERP answered 401 with this token: fetch a new one next time."""
        self._token = None

    async def token(self) -> str:
        """The current token, fetched when missing or about to expire.

        Raises :class:`TokenRefused` when the server refuses the client (400/401 with an OAuth
        error) and :class:`TokenUnavailable` (carrying the :class:`Transient` to return) when
        it cannot be reached or answers 5xx or 429."""
        async with self._lock:
            if self._token is not None and self._clock() < self._until:
                return self._token
            form = {
                "grant_type": "client_credentials",
                "client_id": self._cred.client_id,
                "client_secret": self._cred.client_secret,
            }
            if self._cred.scope:
                form["scope"] = self._cred.scope
            try:
                response = await self._client.post(self._cred.token_url, data=form)
            except httpx.HTTPError as exc:
                raise TokenUnavailable(Transient(f"token endpoint unreachable: {exc!r}")) from None
            if response.status_code >= 500 or response.status_code == 429:
                raise TokenUnavailable(
                    Transient(f"token endpoint answered HTTP {response.status_code}")
                )
            try:
                data = response.json()
            except ValueError:
                data = {}
            if response.status_code != 200 or not isinstance(data, dict):
                error = (data.get("error_description") or data.get("error")) if data else None
                raise TokenRefused(
                    f"token endpoint refused client {self._cred.client_id!r}: "
                    f"HTTP {response.status_code} {error or response.text[:200]}"
                )
            token = data.get("access_token")
            if not isinstance(token, str) or not token:
                raise TokenRefused("token endpoint answered without an access_token")
            expires = data.get("expires_in", 3600)
            try:
                lifetime = float(expires)
            except (TypeError, ValueError):
                lifetime = 3600.0
            self._token = token
            self._until = self._clock() + max(lifetime - EARLY_S, lifetime / 2)
            return token


class TokenUnavailable(Exception):
    """No token now (the server is down or slow); carries the :class:`Transient` to return."""

    def __init__(self, outcome: Transient) -> None:
        super().__init__(outcome.text)
        self.outcome = outcome
