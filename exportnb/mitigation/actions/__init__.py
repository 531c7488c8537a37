"""The built-in mitigations, one module each, each a
:class:`~exportnb.mitigation.registry.Mitigation` that the ``exportnb.mitigations``
entry-point group of ``pyproject.toml`` registers, like another package's would be:

* ``pause-bulk``, ``resume-bulk`` (:mod:`.bulk`) -- set or unset ``export.bulk_paused``:
  queued bulk exports wait, or may start.
* ``retry`` (:mod:`.retry`) -- queue finished jobs again, at most ``concurrency`` at once.
* ``fallback-bucket`` (:mod:`.fallback`) -- set ``export.fallback_bucket`` for a TTL: new
  exports and retries land in the fallback bucket.
* ``chunk-size`` (:mod:`.chunks`) -- the chunk size of jobs' next attempts.
* ``revert`` (:mod:`.revert`) -- undo what the incident changed, where it is still so.

:mod:`.common` holds what several share: the job IDs parameter, reading jobs and what they
reach, a flag's state, counting. Nothing else in exportnb imports these modules: the
registry (:mod:`exportnb.mitigation.registry`) finds them by name.
"""
