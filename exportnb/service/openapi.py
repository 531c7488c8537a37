"""The receiver's OpenAPI 3.1 document, served at ``/openapi.json``.

Written out by hand next to the routes it describes (``tests/test_service_api.py`` checks
that every route is in it), so that it says exactly what the handlers accept: the webhook
body as Alertmanager sends it, the limits, and the status codes.
"""

from __future__ import annotations

from typing import Any

from exportnb import __version__
from exportnb.service import alerts

_STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_ERROR = {"type": "object", "properties": {"error": {"type": "string"}}, "required": ["error"]}


def _answer(description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    schema = schema or {"$ref": "#/components/schemas/Error"}
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _alert() -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["status", "labels", "startsAt"],
        "properties": {
            "status": {"enum": list(alerts.STATUSES)},
            "labels": {**_STRING_MAP, "description": "job_id / job_ids name the failing jobs"},
            "annotations": {**_STRING_MAP, "description": "job_id / job_ids as for labels"},
            "startsAt": {"type": "string", "format": "date-time"},
            "endsAt": {"type": "string", "format": "date-time"},
            "generatorURL": {"type": "string"},
            "fingerprint": {"type": "string", "pattern": alerts.FINGERPRINT.pattern},
        },
    }


def _webhook(max_alerts: int) -> dict[str, Any]:
    return {
        "type": "object",
        "description": "Alertmanager's webhook payload, version 4.",
        "required": ["status", "alerts", "groupKey"],
        "properties": {
            "version": {"const": "4"},
            "receiver": {"type": "string"},
            "status": {"enum": list(alerts.STATUSES)},
            "alerts": {
                "type": "array",
                "minItems": 1,
                "maxItems": max_alerts,
                "items": {"$ref": "#/components/schemas/Alert"},
            },
            "groupKey": {"type": "string", "minLength": 1},
            "groupLabels": _STRING_MAP,
            "commonLabels": _STRING_MAP,
            "commonAnnotations": _STRING_MAP,
            "externalURL": {"type": "string"},
            "truncatedAlerts": {"type": "integer", "minimum": 0},
        },
    }


def _receipt() -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["incident", "action"],
        "properties": {
            "incident": {"type": ["string", "null"]},
            "action": {"enum": ["queued", "heartbeat", "resolved", "ignored"]},
            "run": {"type": ["integer", "null"]},
            "new_alerts": {"type": "integer"},
        },
    }


def document(*, max_body: int, max_alerts: int) -> dict[str, Any]:
    """The OpenAPI document for a receiver with these limits."""
    secured: list[dict[str, list[str]]] = [{"bearer": []}, {"basic": []}]
    unauthorized = _answer("no or wrong credentials")
    incident = {
        "type": "object",
        "description": "An incident: id, status, group_key, runs "
        "(how many), records (id, run, status, html, url), notifications, "
        "heartbeats...",
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "exportnb alert receiver",
            "version": __version__,
            "description": "Alertmanager webhooks in, incident notebook runs out.",
        },
        "security": secured,
        "paths": {
            "/alerts/alertmanager": {
                "post": {
                    "summary": "Receive an Alertmanager webhook; runs are queued, not awaited",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/Webhook"}}
                        },
                        "description": f"At most {max_body} bytes and {max_alerts} alerts.",
                    },
                    "responses": {
                        "202": _answer("accepted", {"$ref": "#/components/schemas/Receipt"}),
                        "400": _answer("not JSON"),
                        "401": unauthorized,
                        "413": _answer(f"larger than {max_body} bytes"),
                        "422": _answer("not a webhook payload, or too many alerts"),
                        "503": _answer("the incident store cannot take it now; retry"),
                    },
                }
            },
            "/healthz": {
                "get": {
                    "summary": "Liveness (no authentication)",
                    "security": [],
                    "responses": {"200": _answer("serving", {"type": "object"})},
                }
            },
            "/incidents": {
                "get": {
                    "summary": "The incidents, newest first",
                    "parameters": [
                        {
                            "name": "status",
                            "in": "query",
                            "schema": {"enum": ["open", "resolving", "resolved"]},
                        },
                        {
                            "name": "limit",
                            "in": "query",
                            "schema": {"type": "integer", "minimum": 1, "maximum": 1000},
                        },
                    ],
                    "responses": {
                        "200": _answer(
                            "the incidents",
                            {
                                "type": "object",
                                "properties": {"incidents": {"type": "array", "items": incident}},
                            },
                        ),
                        "401": unauthorized,
                        "422": _answer("bad query"),
                    },
                }
            },
            "/incidents/{incident_id}": {
                "get": {
                    "summary": "One incident with the history of its runs and links to their HTML",
                    "parameters": [
                        {
                            "name": "incident_id",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string"},
                        }
                    ],
                    "responses": {
                        "200": _answer("the incident", incident),
                        "401": unauthorized,
                        "404": _answer("no such incident"),
                    },
                }
            },
            "/records/{incident_id}/{stamp}/notebook.html": {
                "get": {
                    "summary": "A record's page (its notebook.html, checked against its sha256), "
                    "served inert: no scripts, no requests",
                    "parameters": [
                        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
                        for name in ("incident_id", "stamp")
                    ],
                    "responses": {
                        "200": {
                            "description": "the page",
                            "content": {"text/html": {"schema": {"type": "string"}}},
                        },
                        "401": unauthorized,
                        "404": _answer("no such record"),
                        "409": _answer("the page does not match its sha256"),
                        "503": _answer("the archive cannot be read now"),
                    },
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics: alerts received, runs by state, run "
                    "durations, queue and outbox depths, Slack failures (docs/alerts.md)",
                    "responses": {
                        "200": {
                            "description": "the Prometheus text format, version 0.0.4",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        },
                        "401": unauthorized,
                    },
                }
            },
            "/openapi.json": {
                "get": {
                    "summary": "This document",
                    "responses": {
                        "200": _answer("OpenAPI", {"type": "object"}),
                        "401": unauthorized,
                    },
                }
            },
        },
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "basic": {"type": "http", "scheme": "basic"},
            },
            "schemas": {
                "Webhook": _webhook(max_alerts),
                "Alert": _alert(),
                "Receipt": _receipt(),
                "Error": _ERROR,
            },
        },
    }
