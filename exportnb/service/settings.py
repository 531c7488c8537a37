"""The receiver's settings: the ``[serve]`` table of ``$EXPORTNB_HOME/config.toml``, and the
environment.

Example::

    [serve]
    token_file = "/etc/exportnb/webhook-token"    # bearer token (or $EXPORTNB_WEBHOOK_TOKEN)
    basic_user = "alertmanager"                   # basic auth (or $EXPORTNB_WEBHOOK_USER)
    basic_password_file = "/etc/exportnb/webhook-password"   # (or $EXPORTNB_WEBHOOK_PASSWORD)
    max_body = "1MiB"                             # larger requests get 413
    max_alerts = 1000                             # more alerts in one payload get 422
    queue = "sqlite"                              # or "sqlite:///path/queue.db", "redis://host:6379/0"
    workers = 2                                   # runs at once in the embedded consumer
    update_interval = "15m"                       # open incidents are re-run this often
    slack_webhook = "https://hooks.slack.com/services/..."   # (or $EXPORTNB_SLACK_WEBHOOK)
    slack_retries = 3                             # retries of one post (429, 500/503, no answer)
    slack_backoff = "500ms"                       # the first wait before a retry; it doubles
    slack_timeout = "10s"                         # one request to Slack
    slack_allow_http_loopback = false             # tests and development only: see below
    public_url = "https://exportnb.example.net"   # where people reach this service (or
                                                  # $EXPORTNB_PUBLIC_URL): record links
    notebook = "/opt/acme/export_failure.ipynb"  # default: the incident template
    cell_timeout = "10m"                          # a cell running longer fails the run
    outbox_interval = "30s"                       # how often kept records and Slack
                                                  # updates are re-delivered

The environment wins over the file for the credentials and the Slack webhook, so that
secrets can stay out of ``config.toml``. Files holding secrets are read once, at start.

The Slack webhook must be an ``https://`` URL: its path is a secret, and a status update
carries the incident's findings. ``slack_allow_http_loopback = true`` lets an
``http://`` webhook on 127.0.0.1, ::1 or localhost through, for a local receiver in tests
and development; it never allows plain HTTP to any other host.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from exportnb.core import config
from exportnb.core.errors import ConfigError, InvalidInput
from exportnb.core.quantities import parse_size, parse_ttl

TOKEN_ENV = "EXPORTNB_WEBHOOK_TOKEN"
USER_ENV = "EXPORTNB_WEBHOOK_USER"
PASSWORD_ENV = "EXPORTNB_WEBHOOK_PASSWORD"
SLACK_ENV = "EXPORTNB_SLACK_WEBHOOK"
PUBLIC_URL_ENV = "EXPORTNB_PUBLIC_URL"
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})
KNOWN = {
    "token_file",
    "basic_user",
    "basic_password_file",
    "max_body",
    "max_alerts",
    "queue",
    "workers",
    "update_interval",
    "slack_webhook",
    "notebook",
    "cell_timeout",
    "outbox_interval",
    "public_url",
    "slack_retries",
    "slack_backoff",
    "slack_timeout",
    "slack_allow_http_loopback",
}


def service_dir() -> Path:
    """Where the receiver keeps its incidents, its queue and its outbox."""
    return config.home() / "service"


@dataclass(frozen=True)
class ServeSettings:
    """What ``exportnb serve`` and ``exportnb worker`` run with (see the module docstring)."""

    token: str | None = None
    basic_user: str | None = None
    basic_password: str | None = None
    max_body: int = 2**20
    max_alerts: int = 1000
    queue: str = "sqlite"
    workers: int = 2
    update_interval: float = 900.0
    slack_webhook: str | None = None
    notebook: str | None = None
    cell_timeout: float = 600.0
    outbox_interval: float = 30.0
    public_url: str | None = None
    slack_retries: int = 3
    slack_backoff: float = 0.5
    slack_timeout: float = 10.0

    def __repr__(self) -> str:  # never print the secrets
        return f"ServeSettings(queue={self.queue!r}, workers={self.workers})"

    @property
    def has_credentials(self) -> bool:
        return bool(self.token) or bool(self.basic_user and self.basic_password)

    @classmethod
    def load(cls, path: Path | None = None, env: Mapping[str, str] | None = None) -> ServeSettings:
        """``[serve]`` of ``config.toml`` (when there is one), with the environment over it."""
        path = path or config.home() / "config.toml"
        raw: dict[str, Any] = {}
        if path.exists():
            try:
                raw = tomllib.loads(path.read_text(encoding="utf-8")).get("serve", {})
            except (OSError, tomllib.TOMLDecodeError) as exc:
                raise ConfigError(f"cannot read {path}: {exc}") from exc
        return cls.from_dict(raw, env=os.environ if env is None else env, source=str(path))

    @classmethod
    def from_dict(
        cls, raw: Mapping[str, Any], *, env: Mapping[str, str], source: str = "config"
    ) -> ServeSettings:
        if not isinstance(raw, Mapping):
            raise ConfigError(f"{source}: [serve] must be a table")
        unknown = sorted(set(raw) - KNOWN)
        if unknown:
            raise ConfigError(f"{source}: [serve] has unknown keys: {', '.join(unknown)}")
        try:
            return cls(
                token=env.get(TOKEN_ENV) or _secret(raw.get("token_file"), "token_file"),
                basic_user=env.get(USER_ENV) or _text(raw.get("basic_user"), "basic_user"),
                basic_password=env.get(PASSWORD_ENV)
                or _secret(raw.get("basic_password_file"), "basic_password_file"),
                max_body=parse_size(raw.get("max_body", cls.max_body)),
                max_alerts=_positive(raw.get("max_alerts", cls.max_alerts), "max_alerts"),
                queue=_queue(raw.get("queue", cls.queue)),
                workers=_count(raw.get("workers", cls.workers), "workers"),
                update_interval=parse_ttl(raw.get("update_interval", "15m")),
                slack_webhook=_slack(raw, env),
                notebook=_text(raw.get("notebook"), "notebook"),
                cell_timeout=parse_ttl(raw.get("cell_timeout", "10m")),
                outbox_interval=parse_ttl(raw.get("outbox_interval", "30s")),
                public_url=_base(env.get(PUBLIC_URL_ENV) or raw.get("public_url")),
                slack_retries=_retries(raw.get("slack_retries", cls.slack_retries)),
                slack_backoff=parse_ttl(raw.get("slack_backoff", "500ms")),
                slack_timeout=parse_ttl(raw.get("slack_timeout", "10s")),
            )
        except InvalidInput as exc:
            raise ConfigError(f"{source}: [serve] {exc.message}") from exc


def _text(value: Any, name: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise InvalidInput(f"{name} must be a non-empty string")
    return value


def _secret(path: Any, name: str) -> str | None:
    """The first line of a secret file, stripped; refuses an empty or unreadable one."""
    if _text(path, name) is None:
        return None
    try:
        secret = Path(path).expanduser().read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"{name}: cannot read {path}: {exc}") from exc
    if not secret:
        raise InvalidInput(f"{name}: {path} is empty")
    return secret


def _positive(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidInput(f"{name} must be a whole number of at least 1, not {value!r}")
    return value


def _count(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 64:
        raise InvalidInput(f"{name} must be a whole number from 0 to 64, not {value!r}")
    return value


def _queue(value: Any) -> str:
    if not isinstance(value, str) or not (
        value == "sqlite" or value.startswith(("sqlite:///", "redis://", "rediss://"))
    ):
        raise InvalidInput(
            f'queue must be "sqlite", "sqlite:///path" or "redis://host:port/db", not {value!r}'
        )
    return value


def _url(value: Any, name: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.startswith(("https://", "http://")):
        raise InvalidInput(f"{name} must be an http(s) URL")
    return value


def _retries(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 10:
        raise InvalidInput(f"slack_retries must be a whole number from 0 to 10, not {value!r}")
    return value


def _slack(raw: Mapping[str, Any], env: Mapping[str, str]) -> str | None:
    """The Slack webhook: ``$EXPORTNB_SLACK_WEBHOOK`` over ``slack_webhook``; https only."""
    loopback = raw.get("slack_allow_http_loopback", False)
    if not isinstance(loopback, bool):
        raise InvalidInput("slack_allow_http_loopback must be true or false")
    if env.get(SLACK_ENV):
        try:
            return _https(env[SLACK_ENV], f"${SLACK_ENV}", loopback=loopback)
        except InvalidInput as exc:  # the environment's, not the file's: no [serve] prefix
            raise ConfigError(exc.message) from exc
    url = _text(raw.get("slack_webhook"), "slack_webhook")
    return _https(url, "slack_webhook", loopback=loopback) if url else None


def _https(url: str, name: str, *, loopback: bool) -> str:
    """``url`` when it is https (or http to a loopback host, when allowed). The message
    names the setting and the scheme and host only: the webhook's path is a secret."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
    except ValueError:
        parts, host = urlsplit(""), ""
    if parts.scheme == "https" and host:
        return url
    if parts.scheme == "http" and host in LOOPBACK_HOSTS and loopback:
        return url
    shown = f"{parts.scheme}://{host}" if parts.scheme else "a URL without a scheme"
    hint = (
        " (slack_allow_http_loopback only lets http:// to 127.0.0.1, ::1 or localhost through)"
        if loopback
        else ""
    )
    raise InvalidInput(f"{name} must be an https:// URL, not {shown}{hint}")


def _base(value: Any) -> str | None:
    """The public URL as a base for links: http(s), no query or fragment, no trailing /."""
    url = _url(value, "public_url")
    if url is not None and ("?" in url or "#" in url or any(c.isspace() for c in url)):
        raise InvalidInput("public_url must be a plain http(s) URL (no query, fragment or space)")
    return url.rstrip("/") if url else None
