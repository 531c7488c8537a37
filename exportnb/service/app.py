"""The ASGI app (Starlette): the webhook, the incidents, health, metrics and the OpenAPI
document.

==================================  ===============================================
``POST /alerts/alertmanager``       202 ``{"incident", "action", "run", "new_alerts"}``
``GET /healthz``                    200 ``{"status": "ok"}`` (no authentication)
``GET /incidents``                  ``{"incidents": [...]}``, newest first
``GET /incidents/{id}``             the incident, with ``history``: its runs
``GET /records/{id}/notebook.html``  a record's page, checked against its sha256
``GET /metrics``                    Prometheus's text format
                                    (:mod:`exportnb.service.metrics`)
``GET /openapi.json``               :mod:`exportnb.service.openapi`
==================================  ===============================================

Every path but ``/healthz`` needs the credentials, ``/metrics`` too: Prometheus scrapes it
with the bearer token (``authorization.credentials_file`` in its scrape config).

A record's page is served as an inert document: a Content-Security-Policy lets it show
its styles and embedded images and nothing else (no scripts, no requests), so what a
notebook displayed cannot act in the reader's browser. Records never change, so the page
may be cached. With ``[serve] public_url`` set, the links in answers and Slack posts are
absolute; otherwise they are paths on this service.

The webhook answers as soon as the notification is in the incident store: runs happen
later, in the workers. Bad requests change nothing: 401 before the body is read, 413 for
a body over ``max_body`` (by ``Content-Length``, or while it streams in), 400 for a body
that is not JSON, 422 for JSON that is not a version-4 payload or holds more than
``max_alerts`` alerts, 503 when the store cannot take it (Alertmanager retries 5xx).
"""

from __future__ import annotations

import logging
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from exportnb.archive.bundle import html_of
from exportnb.core.errors import InvalidInput, NotFound, PreconditionFailed, StorageError
from exportnb.core.ids import RECORD_ID
from exportnb.service import alerts, openapi
from exportnb.service.auth import Credentials, RequireAuth
from exportnb.service.incidents import IncidentStore, Receipt
from exportnb.service.metrics import CONTENT_TYPE, ServiceMetrics
from exportnb.service.outbox import OutboxArchive, outbox_dir
from exportnb.service.settings import ServeSettings

STATUSES = ("open", "resolving", "resolved")
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; img-src data:; style-src 'unsafe-inline'; "
    "font-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "private, max-age=86400, immutable",
}
"""A record's page: its own styles and embedded images, nothing that runs or calls out."""
log = logging.getLogger("exportnb.service")


def error(status: int, message: str, **headers: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers or None)


class Receiver:
    """The handlers, over one incident store and one set of settings."""

    def __init__(
        self, store: IncidentStore, settings: ServeSettings, metrics: ServiceMetrics
    ) -> None:
        self.store, self.settings, self.metrics = store, settings, metrics
        self.schema = openapi.document(max_body=settings.max_body, max_alerts=settings.max_alerts)

    async def alertmanager(self, request: Request) -> Response:
        answer = await self._alertmanager(request)
        self.metrics.alert(answer.status_code == 202)
        return answer

    async def _alertmanager(self, request: Request) -> Response:
        body = await self._body(request)
        if body is None:
            return error(
                413, f"the body is larger than {self.settings.max_body} bytes", Connection="close"
            )
        try:
            status, answer = await run_in_threadpool(self._receive, body)
        except StorageError as exc:
            log.error("cannot take a notification: %s", exc.message)
            return error(503, "the incident store cannot take it now; retry")
        if not isinstance(answer, Receipt):
            return error(status, answer)
        if answer.action != "heartbeat":
            log.info("%s: %s (run %s)", answer.incident, answer.action, answer.run)
        return JSONResponse(answer.__dict__, status_code=202)

    async def _body(self, request: Request) -> bytes | None:
        """The body, or None as soon as it is known to be over the limit."""
        limit = self.settings.max_body
        declared = request.headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            return None
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                return None
            chunks.append(chunk)
        return b"".join(chunks)

    def _receive(self, body: bytes) -> tuple[int, Receipt | str]:
        """``(202, receipt)``, or ``(400 or 422, why)`` with nothing stored."""
        try:
            doc = alerts.decode(body)
        except InvalidInput as exc:
            return 400, exc.message
        try:
            note = alerts.validate(doc, max_alerts=self.settings.max_alerts)
        except InvalidInput as exc:
            return 422, exc.message
        return 202, self.store.receive(note)

    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def incidents(self, request: Request) -> Response:
        status = request.query_params.get("status")
        limit = request.query_params.get("limit", "100")
        if status is not None and status not in STATUSES:
            return error(422, f"status must be one of {', '.join(STATUSES)}")
        if not limit.isdigit() or not 1 <= int(limit) <= 1000:
            return error(422, "limit must be a whole number from 1 to 1000")
        found = await run_in_threadpool(self.store.incidents, status=status, limit=int(limit))
        base = self.settings.public_url
        return JSONResponse({"incidents": [i.summary(base) for i in found]})

    async def incident(self, request: Request) -> Response:
        incident_id = request.path_params["incident_id"]
        try:
            found = await run_in_threadpool(self.store.incident, incident_id)
        except NotFound as exc:
            return error(404, exc.message)
        base = self.settings.public_url
        return JSONResponse(
            {**found.summary(base), "history": [r.to_json(base) for r in found.runs]}
        )

    async def record_page(self, request: Request) -> Response:
        record_id = f"{request.path_params['incident_id']}/{request.path_params['stamp']}"
        if not RECORD_ID.match(record_id):
            return error(404, f"no record {record_id}")
        try:
            _, page = await run_in_threadpool(html_of, OutboxArchive(), record_id)
        except NotFound as exc:
            return error(404, exc.message)
        except PreconditionFailed as exc:
            log.error("record %s: %s", record_id, exc.message)
            return error(409, exc.message)
        except StorageError as exc:
            return error(503, exc.message)
        return Response(page, media_type="text/html; charset=utf-8", headers=PAGE_HEADERS)

    async def openapi(self, request: Request) -> Response:
        return JSONResponse(self.schema)

    async def prometheus(self, request: Request) -> Response:
        text = await run_in_threadpool(self.metrics.render)
        return Response(text, media_type=CONTENT_TYPE)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return error(exc.status_code, str(exc.detail), **(exc.headers or {}))


def create_app(
    store: IncidentStore,
    settings: ServeSettings,
    credentials: Credentials,
    *,
    metrics: ServiceMetrics | None = None,
    **options: Any,
) -> Starlette:
    """The app; ``options`` go to Starlette (``lifespan``, say). Without ``metrics``,
    ``/metrics`` reads the store and this host's outbox, but no queue."""
    metrics = metrics or ServiceMetrics(store.path, None, outbox_dir())
    receiver = Receiver(store, settings, metrics)
    routes = [
        Route("/alerts/alertmanager", receiver.alertmanager, methods=["POST"]),
        Route("/healthz", receiver.healthz, methods=["GET"]),
        Route("/incidents", receiver.incidents, methods=["GET"]),
        Route("/incidents/{incident_id}", receiver.incident, methods=["GET"]),
        Route(
            "/records/{incident_id}/{stamp}/notebook.html", receiver.record_page, methods=["GET"]
        ),
        Route("/metrics", receiver.prometheus, methods=["GET"]),
        Route("/openapi.json", receiver.openapi, methods=["GET"]),
    ]
    return Starlette(
        routes=routes,
        middleware=[Middleware(RequireAuth, credentials=credentials)],
        exception_handlers={HTTPException: _http_error},
        **options,
    )
