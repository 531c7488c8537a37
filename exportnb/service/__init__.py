"""The service: Alertmanager webhooks in, incident notebook runs out (``exportnb serve``).

::

    Alertmanager ──POST──▶ app ──▶ incidents (SQLite: dedupe, runs)      ◀── GET /incidents
                                        │ waiting runs
                                        ▼
                                   dispatcher ──enqueue──▶ queue (huey: SQLite or Redis)
                                        ▲                        │
                  claim/lease/done keys │                        ▼
                                        └──────────────── worker: runs ──▶ runner ──▶ archive
                                                                              (outbox when
                                                                               unreachable)

- :mod:`~exportnb.service.alerts`: the webhook payload, validated into frozen dataclasses;
- :mod:`~exportnb.service.incidents`: one incident per alert group; heartbeats, new alerts,
  resolution; the runs of an incident, one at a time;
- :mod:`~exportnb.service.queue`: huey, its JSON messages, and the keys beside them;
- :mod:`~exportnb.service.runs`: a worker executes an attempt once (claim, lease, adopt);
- :mod:`~exportnb.service.dispatch`: queues runs, follows them, re-runs open incidents
  every 15 minutes, puts each finished run's status update in the outbox for Slack;
- :mod:`~exportnb.service.slack`: the Block Kit message, and slack-sdk's webhook client
  with its retry handlers (429 with Retry-After, 500/503, no answer);
- :mod:`~exportnb.service.outbox`: records kept locally while the archive is unreachable,
  and status updates kept until Slack takes them, each delivered in order by the delivery
  loop (:func:`~exportnb.service.runs.deliver_outbox`);
- :mod:`~exportnb.service.app`, :mod:`~exportnb.service.auth`,
  :mod:`~exportnb.service.openapi`, :mod:`~exportnb.service.metrics`: the HTTP side,
  ``/metrics`` included;
- :mod:`~exportnb.service.server`: the processes (``exportnb serve``, ``exportnb worker``).

docs/alerts.md is the guide.
"""
