"""exportnb: a Jupyter-based kit for investigating failed data exports.

An alert becomes a notebook run; the run becomes a record; records are reviewed later.
Each subpackage is one stage of that flow, and imports only from the stages below it
(``pyproject.toml``'s import-linter contracts check it in ``make test``)::

    Alertmanager ─▶ service ─▶ run ──(papermill, a kernel)──▶ record ─▶ archive ─▶ review
                       │        │                               ▲          (index,
                       │        ▼ the template's cells call     │           chain)
                       │     notebook (views, charts, panel) ───┘
                       │        │
                       │        ▼
                       │     mitigation (assessment, registry, plan, apply, journal, policy)
                       │        │
                       │     incident ── steps: detection … recovery, comms
                       │        │
                       ▼        ▼
                          platform ── sandbox (reference, embedded) | command (exportctl)
                             │
                           core (errors, config, codec, ids, quantities, findings)

==============  ==========================================================================
subpackage      what it holds
==============  ==========================================================================
``core``        the exception tree, configuration, JSON codec, IDs, quantities, findings
``platform``    the Platform contract, its registry, the exportctl JSON contract, S3
``incident``    an incident's parameters and timing; ``steps``: one module per runbook step
``mitigation``  the assessment; one Mitigation per action in a registry; plan, apply, journal
``record``      a run's record: notebook, HTML, ``record.json``; redaction; facts
``archive``     write-once storage of records, the hash chain, integrity, the index
``run``         papermill on a kernel, validated parameters, finalize, JupyterLab
``notebook``    what the template's cells call to render: views, charts, the panel
``review``      the postmortem: timeline, times, views and charts from records
``service``     ``exportnb serve``: webhooks, incidents, queue, workers, Slack
``sandbox``     the reference export platform, its ``exportctl``/``featurectl``, the demo
``cli``         the ``exportnb`` command: thin calls into the library
==============  ==========================================================================

docs/architecture.md says why the package is cut this way.
"""

__version__ = "0.1.0"
