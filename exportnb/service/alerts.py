"""Alertmanager's webhook (payload version 4), read into frozen dataclasses.

Alertmanager posts one :class:`Notification` per alert group: ``receiver``, ``status``
(``firing`` or ``resolved``), ``alerts[]`` (each with ``status``, ``labels``,
``annotations``, ``startsAt``, ``endsAt``, ``generatorURL``, ``fingerprint``),
``groupLabels``, ``commonLabels``, ``commonAnnotations``, ``externalURL``, ``version``,
``groupKey`` and ``truncatedAlerts``.

Reading happens in two steps, so that the receiver can answer each kind of bad input with
its own status: :func:`decode` (the bytes are not JSON, or nest absurdly deep: 400) and
:func:`validate` (JSON of the wrong shape, types or sizes: 422). Both raise
:class:`~exportnb.core.errors.InvalidInput` with a message that says where
(``alerts[3].labels.job_id: ...``), and nothing is kept from a payload that fails.

Only the fields above are kept: unknown fields are dropped, labels and annotations must
map strings to strings, and every string must be valid Unicode (no lone surrogates) and
of bounded length. Label values may hold anything else (quotes, newlines, ``$(...)``):
they only ever travel as JSON values, never through a shell or into code.

Job IDs come from the label or annotation ``job_id`` or ``job_ids`` of the alerts (comma-
or space-separated, each like :data:`JOB_ID`).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from exportnb.core.errors import InvalidInput
from exportnb.run import parameters

STATUSES = ("firing", "resolved")
JOB_ID_NAMES = ("job_id", "job_ids")
JOB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
MAX_JOB_IDS = 100
FINGERPRINT = re.compile(r"^[A-Za-z0-9]{1,64}$")
TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$")
MAX_NAME = 1024
"""The longest label or annotation name."""
MAX_VALUE = 65536
"""The longest string value (an annotation with a long description, say)."""
MAX_LABELS = 512
"""The most labels (or annotations) of one alert."""
MAX_GROUP_KEY = 16384


@dataclass(frozen=True)
class Alert:
    status: str
    labels: dict[str, str]
    annotations: dict[str, str]
    starts_at: str
    ends_at: str
    fingerprint: str
    generator_url: str = ""

    def to_json(self) -> dict[str, Any]:
        """As Alertmanager spells it."""
        return {
            "status": self.status,
            "labels": self.labels,
            "annotations": self.annotations,
            "startsAt": self.starts_at,
            "endsAt": self.ends_at,
            "generatorURL": self.generator_url,
            "fingerprint": self.fingerprint,
        }


@dataclass(frozen=True)
class Notification:
    """One webhook: an alert group's state, as Alertmanager saw it."""

    receiver: str
    status: str
    alerts: tuple[Alert, ...]
    group_key: str
    group_labels: dict[str, str] = field(default_factory=dict)
    common_labels: dict[str, str] = field(default_factory=dict)
    common_annotations: dict[str, str] = field(default_factory=dict)
    external_url: str = ""
    truncated_alerts: int = 0
    version: str = "4"

    @property
    def firing(self) -> frozenset[str]:
        """The fingerprints of the alerts that are firing."""
        return frozenset(a.fingerprint for a in self.alerts if a.status == "firing")

    def job_ids(self) -> list[str]:
        """The job IDs the alerts name (firing ones first), each once, in order."""
        ordered = sorted(self.alerts, key=lambda a: a.status != "firing")
        found: dict[str, None] = {}
        for alert in ordered:
            for source in (alert.labels, alert.annotations):
                for name in JOB_ID_NAMES:
                    found.update(dict.fromkeys(split_job_ids(source.get(name, ""))))
        return list(found)[:MAX_JOB_IDS]

    def to_json(self) -> dict[str, Any]:
        """The payload as Alertmanager sent it (its known fields): the notebook's ``alert``."""
        return {
            "receiver": self.receiver,
            "status": self.status,
            "alerts": [a.to_json() for a in self.alerts],
            "groupLabels": self.group_labels,
            "commonLabels": self.common_labels,
            "commonAnnotations": self.common_annotations,
            "externalURL": self.external_url,
            "version": self.version,
            "groupKey": self.group_key,
            "truncatedAlerts": self.truncated_alerts,
        }


def split_job_ids(value: str) -> list[str]:
    return [j for j in re.split(r"[\s,]+", value) if j]


def _no_constants(token: str) -> Any:
    raise ValueError(f"{token} is not a JSON value")


def decode(body: bytes) -> Any:
    """The request body as JSON; InvalidInput when it is not UTF-8 JSON."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"the body is not UTF-8: {exc}") from None
    try:
        return json.loads(text, parse_constant=_no_constants)
    except RecursionError:
        raise InvalidInput("the body is not a webhook payload: JSON nested too deeply") from None
    except ValueError as exc:
        raise InvalidInput(f"the body is not JSON: {exc}") from None


def validate(doc: Any, *, max_alerts: int = 1000) -> Notification:
    """A webhook payload, checked; InvalidInput saying what is wrong, and where."""
    body = _object(doc, "payload")
    version = body.get("version", "4")
    if version != "4":
        raise InvalidInput(
            f'version: only Alertmanager payload version "4" is accepted, not {_show(version)}'
        )
    raw_alerts = body.get("alerts")
    if not isinstance(raw_alerts, list) or not raw_alerts:
        raise InvalidInput("alerts: must be a non-empty list of alerts")
    if len(raw_alerts) > max_alerts:
        raise InvalidInput(
            f"alerts: {len(raw_alerts)} alerts in one payload; at most {max_alerts} are accepted"
        )
    alerts = tuple(_alert(item, f"alerts[{i}]") for i, item in enumerate(raw_alerts))
    truncated = body.get("truncatedAlerts", 0)
    if isinstance(truncated, bool) or not isinstance(truncated, int) or truncated < 0:
        raise InvalidInput(f"truncatedAlerts: must be a whole number >= 0, not {_show(truncated)}")
    notification = Notification(
        receiver=_string(body.get("receiver", ""), "receiver", MAX_NAME),
        status=_status(body.get("status"), "status"),
        alerts=alerts,
        group_key=_group_key(body.get("groupKey")),
        group_labels=_labels(body.get("groupLabels", {}), "groupLabels"),
        common_labels=_labels(body.get("commonLabels", {}), "commonLabels"),
        common_annotations=_labels(body.get("commonAnnotations", {}), "commonAnnotations"),
        external_url=_string(body.get("externalURL", ""), "externalURL", MAX_VALUE),
        truncated_alerts=truncated,
    )
    _check_job_ids(notification)
    _check_fits(notification)
    return notification


def _alert(doc: Any, where: str) -> Alert:
    body = _object(doc, where)
    labels = _labels(body.get("labels"), f"{where}.labels")
    fingerprint = body.get("fingerprint")
    if fingerprint is None:  # older senders: Alertmanager's fingerprint is a hash of the labels
        fingerprint = hashlib.sha256(json.dumps(labels, sort_keys=True).encode()).hexdigest()[:16]
    if not isinstance(fingerprint, str) or not FINGERPRINT.match(fingerprint):
        raise InvalidInput(
            f"{where}.fingerprint: must be 1 to 64 letters and digits, not {_show(fingerprint)}"
        )
    return Alert(
        status=_status(body.get("status"), f"{where}.status"),
        labels=labels,
        annotations=_labels(body.get("annotations", {}), f"{where}.annotations"),
        starts_at=_time(body.get("startsAt"), f"{where}.startsAt"),
        ends_at=_time(body.get("endsAt", "0001-01-01T00:00:00Z"), f"{where}.endsAt"),
        fingerprint=fingerprint,
        generator_url=_string(body.get("generatorURL", ""), f"{where}.generatorURL", MAX_VALUE),
    )


def _object(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise InvalidInput(f"{where}: must be a JSON object, not {_kind(value)}")
    return value


def _labels(value: Any, where: str) -> dict[str, str]:
    body = _object(value, where)
    if len(body) > MAX_LABELS:
        raise InvalidInput(f"{where}: {len(body)} entries; at most {MAX_LABELS}")
    return {
        _string(k, f"{where} name", MAX_NAME): _string(v, f"{where}.{_clip(k)}", MAX_VALUE)
        for k, v in body.items()
    }


def _string(value: Any, where: str, limit: int) -> str:
    if not isinstance(value, str):
        raise InvalidInput(f"{where}: must be a string, not {_kind(value)}")
    if len(value) > limit:
        raise InvalidInput(f"{where}: {len(value)} characters; at most {limit}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput(f"{where}: not valid Unicode (a lone surrogate)") from None
    return value


def _status(value: Any, where: str) -> str:
    if value not in STATUSES:
        raise InvalidInput(f'{where}: must be "firing" or "resolved", not {_show(value)}')
    return str(value)


def _time(value: Any, where: str) -> str:
    if not isinstance(value, str) or not TIMESTAMP.match(value):
        raise InvalidInput(f"{where}: must be an RFC 3339 time, not {_show(value)}")
    return value


def _group_key(value: Any) -> str:
    key = _string(value, "groupKey", MAX_GROUP_KEY)
    if not key:
        raise InvalidInput("groupKey: must not be empty")
    return key


def _check_job_ids(notification: Notification) -> None:
    for i, alert in enumerate(notification.alerts):
        for kind, source in (("labels", alert.labels), ("annotations", alert.annotations)):
            for name in JOB_ID_NAMES:
                for job_id in split_job_ids(source.get(name, "")):
                    if not JOB_ID.match(job_id):
                        raise InvalidInput(
                            f"alerts[{i}].{kind}.{name}: {_show(job_id)} is not a job ID "
                            "(letters, digits, '.', '_', ':' and '-', at most 128)"
                        )


def _check_fits(notification: Notification) -> None:
    """The payload must be a notebook parameter the runner accepts (size, depth)."""
    size = len(json.dumps(notification.to_json(), ensure_ascii=False).encode())
    room = parameters.MAX_BYTES - 64 * 1024  # what the other parameters may take
    if size > room:
        raise InvalidInput(
            f"the payload takes {size} bytes as a notebook parameter; at most {room}"
        )


def _kind(value: Any) -> str:
    names = {
        dict: "an object",
        list: "a list",
        str: "a string",
        bool: "a boolean",
        int: "a number",
        float: "a number",
        type(None): "null",
    }
    return names.get(type(value), type(value).__name__)


def _show(value: Any) -> str:
    """A value for a message: JSON, clipped."""
    try:
        text = json.dumps(value, ensure_ascii=True)
    except (TypeError, ValueError):
        text = _kind(value)
    return _clip(text)


def _clip(text: str, limit: int = 60) -> str:
    text = text.encode("ascii", "backslashreplace").decode()
    return text if len(text) <= limit else text[: limit - 3] + "..."
