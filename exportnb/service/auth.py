"""Authentication as Alertmanager's ``http_config`` sends it: a bearer token or basic auth.

:class:`Credentials` holds what the receiver accepts (either, or both). Comparisons run in
constant time (:func:`hmac.compare_digest`), the user name and the password both, so that
timing says nothing about which part was wrong. :class:`RequireAuth` is the ASGI
middleware: every path but :data:`OPEN_PATHS` needs a good ``Authorization`` header, and
anything else gets 401 with the challenges, before the body is read.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

from exportnb.core.errors import ConfigError
from exportnb.service.settings import ServeSettings

OPEN_PATHS = frozenset({"/healthz"})
CHALLENGE = b'Bearer realm="exportnb", Basic realm="exportnb", charset="UTF-8"'
Scope = MutableMapping[str, Any]
ASGIApp = Callable[
    [Scope, Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Awaitable[None]
]


@dataclass(frozen=True)
class Credentials:
    token: bytes | None = field(default=None, repr=False)
    user: bytes | None = field(default=None, repr=False)
    password: bytes | None = field(default=None, repr=False)
    insecure: bool = False

    @classmethod
    def of(cls, settings: ServeSettings, *, insecure: bool = False) -> Credentials:
        """The settings' credentials; ConfigError when there are none and not ``insecure``."""
        if bool(settings.basic_user) != bool(settings.basic_password):
            raise ConfigError(
                "basic auth needs both a user and a password "
                "(basic_user and basic_password_file, or $EXPORTNB_WEBHOOK_USER "
                "and $EXPORTNB_WEBHOOK_PASSWORD)"
            )
        if not settings.has_credentials and not insecure:
            raise ConfigError(
                "no credentials: set $EXPORTNB_WEBHOOK_TOKEN (or [serve] token_file), or basic "
                "auth ([serve] basic_user and basic_password_file); --insecure-no-auth serves "
                "without any"
            )
        encode = lambda s: s.encode("utf-8") if s else None  # noqa: E731
        open_door = insecure and not settings.has_credentials
        return cls(
            encode(settings.token),
            encode(settings.basic_user),
            encode(settings.basic_password),
            open_door,
        )

    def allows(self, authorization: bytes | None) -> bool:
        """Whether an ``Authorization`` header value is good."""
        if self.insecure:
            return True
        if not authorization:
            return False
        scheme, _, value = authorization.strip().partition(b" ")
        value = value.strip()
        if scheme.lower() == b"bearer" and self.token:
            return hmac.compare_digest(value, self.token)
        if scheme.lower() == b"basic" and self.user and self.password:
            try:
                user, colon, password = base64.b64decode(value, validate=True).partition(b":")
            except (binascii.Error, ValueError):
                return False
            good_user = hmac.compare_digest(user, self.user)
            good_password = hmac.compare_digest(password, self.password)
            return bool(colon) and good_user and good_password
        return False


class RequireAuth:
    """ASGI middleware: 401 unless the request carries good credentials."""

    def __init__(self, app: ASGIApp, credentials: Credentials) -> None:
        self.app, self.credentials = app, credentials

    async def __call__(
        self,
        scope: Scope,
        receive: Callable[[], Awaitable[Any]],
        send: Callable[[Any], Awaitable[None]],
    ) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        headers = [v for k, v in scope.get("headers", []) if k == b"authorization"]
        if self.credentials.allows(headers[0] if len(headers) == 1 else None):
            await self.app(scope, receive, send)
            return
        body = json.dumps({"error": "authentication required: a bearer token or basic auth"})
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"www-authenticate", CHALLENGE),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body.encode()})
