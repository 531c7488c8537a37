"""Build ``templates/export_failure.ipynb``, the incident notebook, from this readable source.

    .venv/bin/python templates/build_template.py          # (re)write the notebook
    .venv/bin/python templates/build_template.py --check  # exit 1 if it is out of date

The notebook follows the export-failure runbook heading by heading and quotes its
checklist lines. Cells only call the exportnb library and show what it returns; the
logic lives in the package. The parameters cell is written from the one parameter table,
``exportnb.incident.parameters.PARAMETER_TABLE``: add or change a parameter there.
``tests/test_template.py`` checks that the committed notebook is what this script builds,
so edit here, not in JupyterLab.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from exportnb.incident.parameters import PARAMETER_TABLE

NOTEBOOK = Path(__file__).with_name("export_failure.ipynb")

TITLE = """\
# Export failure — incident notebook

This notebook works through the **Export Failure runbook** for one incident, heading by
heading: Detection, Immediate Actions, Diagnostics, an Assessment, Mitigations, Recovery
Verification and Communication. It is for incidents where scheduled or ad-hoc exports
fail or deliver incomplete data.

* When an alert fires, `exportnb` runs it with papermill (`mode = "auto"`). An automatic
  run reads and measures. It **applies no mitigation that policy does not allow**
  (`[policy] auto_apply`, empty by default): it lists the runbook commands it recommends,
  with what each would change.
* An engineer opens the same notebook in JupyterLab (`mode = "interactive"`), re-runs
  cells and applies mitigations from the mitigation panel: plan, confirm, apply.
* Every mitigation is journaled (who, when, what, with which result) and applied once per
  incident, however often the notebook runs. The audit trail near the end shows the
  journal; `exportnb finalize` re-runs the notebook unattended to archive it as it stands.

Every step cell calls the `exportnb` library and shows its result under the runbook
command it stands for. The executed notebook is archived as the audit record, and each
result is also stored in it as machine-readable JSON. The parameters are in the next
cell. They are JSON values, and an alert arrives as one JSON value."""


def literal(value: Any) -> str:
    """A JSON value as Python source that reads back as itself (``True``, not ``true``)."""
    if value is None or isinstance(value, bool):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(literal(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)}: {literal(v)}" for k, v in value.items()) + "}"
    return json.dumps(value)


def parameters_cell() -> str:
    """The parameters cell, from the one parameter table: each name = its default (a JSON
    value), with its help as the comment papermill reads."""
    return "\n".join(f"{p.name} = {literal(p.default)}  # {p.help}" for p in PARAMETER_TABLE)


PARAMETERS = parameters_cell()

SETUP = """\
from exportnb.notebook import charts
from exportnb.notebook.display import (
    show, show_chart, show_incident, show_parameters, show_recommendations,
)
from exportnb.incident.model import open_incident, parameters_of

incident = open_incident(**parameters_of(globals()))
incident.start_probes()
show_incident(incident)"""

# (kind, source): "md" cells are Markdown, "code" cells are code.
CELLS: list[tuple[str, str]] = [
    ("md", TITLE),
    ("parameters", PARAMETERS),
    (
        "md",
        """\
## Setup

The incident is opened from the parameters. This checks them and fills in the defaults:
the operator, the platform, `$EXPORT_BUCKET` and `$EXPORT_TARGET_HOST`, and the time to
evaluate at. It also estimates when the incident started: the first failing minute of
the latest breach, or the start of the window when there is none.

The steps that wait on other systems (detection and job state, HeadBucket, checksum
verification, the network path) then start in the background, with the arguments their
cells give them, so that they run while the charts are drawn. Each cell below collects
its step with `incident.collect(...)`: the result of that very call, made early, or the
call made there and then if its arguments differ.""",
    ),
    ("code", SETUP),
    (
        "md",
        """\
## Detection

> - [ ] Alert: Export job failure rate >2% over 10 minutes.
> - [ ] Alert: Export latency >2× SLO or stuck in `running` state beyond SLA.
> - [ ] Customer reports incomplete files or checksum mismatches.

These are the failure rate over the window against the threshold, the latency
percentiles against twice the SLO, stuck jobs, and the job IDs customers reported. The
reported jobs are verified under Diagnostics 3.""",
    ),
    (
        "code",
        """\
from exportnb.incident.steps.detection import detect

detection = incident.collect(detect, incident.platform, **incident.detection_options())
show("detection", detection)""",
    ),
    (
        "md",
        """\
The success rate per minute against the baseline: the same minutes of the day over
the previous `baseline_days` days, with the threshold (1 − `failure_threshold`).""",
    ),
    (
        "code",
        """\
from exportnb.incident.steps.baseline import baseline

usual = baseline(incident.platform, incident.history_since, incident.now,
                 days=incident.baseline_days)
rates = detection.rates_frame()
show_chart(charts.success_rate_chart(rates, usual.frame(), **incident.chart_options()))""",
    ),
    (
        "code",
        """\
show_chart(charts.latency_chart(detection.latency_frame(), slo=incident.latency_slo))""",
    ),
    (
        "md",
        """\
## Immediate Actions (10 minutes)

> - [ ] Declare incident; assign comms lead.
> - [ ] Pause new bulk exports to reduce load.
> - [ ] Capture failing job IDs and sample logs.""",
    ),
    ("code", "show_parameters(incident)"),
    (
        "md",
        """\
This notebook never pauses bulk exports itself. The cell below shows whether they are
paused now, and what `exportctl pause bulk` would hold back. In an interactive session,
the mitigation panel applies it after you confirm.""",
    ),
    (
        "code",
        """\
from exportnb.mitigation.response import bulk_pause, capture

show("immediate_actions", bulk_pause(incident.platform), command="exportctl pause bulk")""",
    ),
    (
        "code",
        """\
from exportnb.incident.steps.jobstate import job_state

jobs = incident.collect(job_state, incident.platform, **incident.job_state_options())
show("immediate_actions", capture(jobs, incident.reported_jobs))""",
    ),
    (
        "md",
        """\
## Diagnostics

### 1. Job state

> - Command: `exportctl list --status failed --limit 20`
> - Expected: Error reasons visible; categorize by connector/storage.""",
    ),
    (
        "code",
        """\
show("job_state", jobs, command="exportctl list --status failed --limit 20")
show_chart(charts.failures_chart(jobs.frame()))""",
    ),
    (
        "md",
        """\
### 2. Storage health

> - Command: `aws s3api head-bucket --bucket $EXPORT_BUCKET`
> - Expected: 200 OK. If throttled, note error code and region.

The buckets checked are `$EXPORT_BUCKET`, the `buckets` parameter, the buckets the
failed jobs name and the fallback bucket.""",
    ),
    (
        "code",
        """\
from exportnb.incident.steps.storagehealth import storage_health

storage = incident.collect(
    storage_health, incident.buckets_to_check(jobs), access=incident.storage_access
)
show("storage_health", storage, command="aws s3api head-bucket --bucket $EXPORT_BUCKET")""",
    ),
    (
        "md",
        """\
### 3. Checksum verification

> - Command: `exportctl verify --job <job-id>`
> - Expected: Checksums match; if mismatch, identify missing segments.

The jobs verified are the reported jobs, the newest failing jobs, and the newest
deliveries of each tenant involved.""",
    ),
    (
        "code",
        """\
from exportnb.incident.steps.checksums import verify_jobs

checks = incident.collect(verify_jobs, incident.platform,
                          incident.checksum_jobs(jobs, detection))
show("checksums", checks, command="exportctl verify --job <job-id>")""",
    ),
    (
        "md",
        """\
Those jobs are a sample: they show *whether* deliveries are damaged, not *which*. When
checksums are in question (job IDs were reported, a mismatch was found above, or
`impact_sweep = "always"`), the **impact sweep** verifies every delivery since the
incident started (less `impact_sweep_margin`), across all tenants, buckets and connectors,
up to `impact_sweep_cap` deliveries. A line below shows its progress (where job IDs were
reported it started early, with the other probes, and may be done already). What it could not
verify (the cap, S3 errors, a timeout) is listed as unverified, never as passed, and the
finding says "partial". The re-export and notify-tenants recommendations, the tenants to
notify and the audit summary use what it found.""",
    ),
    (
        "code",
        """\
from exportnb.incident.steps.impact import impact_sweep
from exportnb.notebook.display import sweep_progress

impact = incident.collect(impact_sweep, incident.platform, **incident.sweep_options(checks),
                          progress=sweep_progress())
show("checksums", impact, command="exportctl verify --job <job-id>")""",
    ),
    (
        "md",
        """\
### 4. Network path

> - Command: `mtr -r $EXPORT_TARGET_HOST`
> - Expected: No packet loss or high latency spikes.

The path is measured with `mtr` where it is installed, and with a TCP probe where it
is not: `probe_count` cycles, `probe_interval` seconds apart. Ask for more cycles (and a
longer interval) to look closer.""",
    ),
    (
        "code",
        """\
from exportnb.incident.steps.network import network_path

path = incident.collect(network_path, incident.target_host, **incident.network_options())
show("network_path", path, command="mtr -r $EXPORT_TARGET_HOST")""",
    ),
    (
        "md",
        """\
## Assessment

The findings of every step lead to recommendations. Each recommendation gives its
reason (the evidence behind it) and the exact runbook command.""",
    ),
    (
        "code",
        """\
from exportnb.mitigation.assessment import assess

assessed = assess(detection, jobs, storage, checks, impact, path,
                  context=incident.assessment_context())
show_recommendations(assessed)""",
    ),
    (
        "md",
        """\
## Mitigations

> - [ ] Retry failed jobs with safe concurrency:
>   - Command: `exportctl retry --status failed --limit 20 --concurrency 2`
>   - Expected: Jobs move to `running`; monitor for repeat errors.
> - [ ] Redirect exports to secondary bucket (if primary impaired):
>   - Command: `featurectl set export.fallback_bucket <bucket> --ttl 30m`
>   - Expected: New exports land in fallback; audit trail updated.
> - [ ] Reduce batch size:
>   - Command: `exportctl update --job <job-id> --chunk-size 50MB`
>   - Expected: Throughput stabilizes; fewer timeout errors.

**In `auto` mode only what `[policy] auto_apply` allows is applied**, once per incident.
The recommended commands are listed below with what each would change and, for an
automatic run, what policy did with each.""",
    ),
    (
        "code",
        """\
from exportnb.mitigation.response import respond

show("mitigations", respond(incident, assessed))""",
    ),
    (
        "md",
        """\
### Mitigation panel

In an interactive session each mitigation has a card, the recommended ones first, with
their inputs prefilled from the diagnosis. **Plan** shows what would change and how
widely (jobs, tenants, buckets) with the runbook command; **Apply…** asks to confirm;
**Confirm** applies it once and shows the result. After a retry the card follows the
retried jobs until they finish, and flags the ones that fail again with the same error.
The same flow is `exportnb mitigate ACTION --incident ID` at a shell. **Finalize**
re-executes this notebook unattended into the archive (`exportnb finalize ID`).""",
    ),
    (
        "code",
        """\
from exportnb.notebook.panel import mitigation_panel

mitigation_panel(incident, assessed)""",
    ),
    (
        "md",
        """\
## Recovery Verification

> - [ ] Export success rate returns to baseline for 15 minutes.
> - [ ] Checksums verified for affected jobs; customers notified of re-exports.
> - [ ] Fallback bucket disabled; configuration reverted.

The checksums of a sample of the affected jobs are verified again (the result says how
many of how many); every tenant the impact sweep found damaged is among those to notify.""",
    ),
    (
        "code",
        """\
from exportnb.incident.steps.recovery import verify_recovery

recent = baseline(incident.platform, incident.recovery_since, incident.now,
                  days=incident.baseline_days)
recovered = verify_recovery(incident.platform, baseline=recent, impact=impact,
                            affected_jobs=incident.affected_jobs(checks, impact),
                            **incident.recovery_options())
show("recovery", recovered)""",
    ),
    (
        "code",
        """\
show_chart(charts.success_rate_chart(recovered.rates_frame(), recent.frame(),
                                     **incident.chart_options(),
                                     title="Success rate over the recovery window"))""",
    ),
    (
        "md",
        """\
## Communication

> - [ ] Provide updates every 15 minutes with job success rate and mitigations.
> - [ ] Summarize affected tenants, files, and corrective actions for audit.""",
    ),
    (
        "code",
        """\
from exportnb.incident.steps.comms import audit_summary, status_update
from exportnb.core.findings import findings_of

found = findings_of(detection, jobs, storage, checks, impact, path, recovered)
update = status_update(detection=detection, recovery=recovered, assessment=assessed,
                       findings=found, **incident.comms_options())
show("communication", update)""",
    ),
    (
        "md",
        """\
### Audit trail

The incident's journal: every mitigation planned, applied, declined, skipped or
reverted, with the operator, the time (UTC), the parameters and the result, its hash
chain verified. It is ordinary cell output, so the archived record shows it. Run this
cell again after applying from the panel, or finalize the incident.""",
    ),
    (
        "code",
        """\
from exportnb.mitigation.trail import trail

show("mitigations", trail(incident.id))""",
    ),
    (
        "code",
        """\
summary = audit_summary(incident_id=incident.id, job_state=jobs, checksums=checks,
                        impact=impact, recovery=recovered, actions=incident.audit_entries())
show("communication", summary)""",
    ),
]


def build() -> nbformat.NotebookNode:
    """The notebook, with stable cell IDs so that rebuilding changes nothing."""
    cells = []
    for index, (kind, source) in enumerate(CELLS):
        if kind == "md":
            cell = new_markdown_cell(source)
        else:
            cell = new_code_cell(source)
            if kind == "parameters":
                cell.metadata["tags"] = ["parameters"]
        cell["id"] = f"cell-{index:02d}"
        cells.append(cell)
    notebook = new_notebook(cells=cells)
    notebook.metadata.update(
        {
            "kernelspec": {
                "name": "python3",
                "display_name": "Python 3 (ipykernel)",
                "language": "python",
            },
            "language_info": {"name": "python"},
        }
    )
    nbformat.validate(notebook)
    return notebook


def text() -> str:
    return nbformat.writes(build()) + "\n"


def main(argv: list[str]) -> int:
    if "--check" in argv:
        current = NOTEBOOK.read_text(encoding="utf-8") if NOTEBOOK.exists() else ""
        if current != text():
            print(f"{NOTEBOOK} is out of date: run {Path(__file__).name}", file=sys.stderr)
            return 1
        return 0
    NOTEBOOK.write_text(text(), encoding="utf-8")
    print(f"wrote {NOTEBOOK}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
