"""The sandbox: a real, small export platform that exportnb can investigate.

It holds a SQLite job store (``store``), an export worker that writes segments and
manifests to S3 (``worker``, ``objects``), faults that can be injected and cleared
(``faults``, ``s3proxy``, ``netpath``), seeded history and named scenarios
(``history``, ``scenario``), Prometheus metrics (``metrics``) and the background
process that runs all of it (``daemon``, ``control``).
"""
