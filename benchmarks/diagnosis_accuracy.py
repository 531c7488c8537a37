"""Benchmark: the diagnosis on generated incidents, scored against the sandbox's own record of
what each fault struck.

Targets (issue: "a diagnosis that finds the whole impact and recommends values that would
work, proved on generated incidents"), over the incidents of seeds S .. S+N-1 (the scenarios
``exportnb sandbox generate --seed`` writes, healthy controls among them): cause recall 1.0
and cause precision >= 0.95 over the set; impact recall 1.0 where the checksum sweep is not
capped; no recommended value that would not have worked; nothing recommended on a healthy
control (``exportnb.sandbox.scoring``).

Each incident, one after the other: generate its scenario, start the sandbox on it in a
fresh ``$EXPORTNB_HOME`` (``exportnb sandbox up``, a command of its own as on a game day),
run the incident template on it as ``exportnb run`` does (runner, papermill, a real kernel,
the record archived), read the ground truth up to the run's start, stop the sandbox, score
the record. A table gives each incident's figures, then the set's against the targets.

A workload that fails — a sandbox that does not start, a notebook that fails — makes the
figures no measurement: the benchmark then exits with status 1 and reports no target as
PASS. Progress goes to stderr.

Run: ``python benchmarks/diagnosis_accuracy.py [--scenarios 50] [--seed 0] [--keep DIR]``
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from exportnb.core.errors import ExportnbError
from exportnb.platform.registry import local_environment
from exportnb.run.runner import run
from exportnb.sandbox.generate import Generated, generate, save
from exportnb.sandbox.scoring import Score, Summary, score
from exportnb.sandbox.truth import truth_of


@dataclass(frozen=True)
class Outcome:
    """One incident: its scenario, its score, or why it could not be scored."""

    generated: Generated
    seconds: float
    score: Score | None = None
    error: str = ""


def progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def sandbox(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``exportnb sandbox ARGS`` with ``$EXPORTNB_HOME`` set to ``home``."""
    return subprocess.run(
        [sys.executable, "-m", "exportnb.cli", "sandbox", *args],
        env={**os.environ, "EXPORTNB_HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=600,
    )


def diagnose(generated: Generated, folder: Path, step: str) -> Outcome:
    """Sandbox up, the template, the truth, sandbox down; the score or the error."""
    began = time.monotonic()
    home = folder / generated.name
    home.mkdir(parents=True)
    path = save(generated, home / f"{generated.name}.toml")
    try:
        progress(f"{step} sandbox up ({', '.join(generated.kinds) or 'control'})")
        started = sandbox(home, "up", "--scenario", str(path))
        if started.returncode != 0:
            raise ExportnbError(f"sandbox up: {started.stderr.strip().splitlines()[-1:]}")
        found = local_environment(home)
        if found is None:
            raise ExportnbError("the sandbox is not running after `sandbox up`")
        env, defaults = found
        progress(f"{step} running the incident template")
        record = run(
            incident_id=f"INC-{generated.name}",
            env=env,
            defaults=defaults,
            archive=str(folder / "archive"),
            cell_timeout=300,
        )
        if record.status != "succeeded":
            error = record.error.describe() if record.error else record.status
            return Outcome(generated, time.monotonic() - began, error=f"notebook: {error}")
        truth = truth_of(home, until=record.started_at.timestamp())
        scored = score(record, truth, scenario=generated.name)
        return Outcome(generated, time.monotonic() - began, scored)
    except ExportnbError as exc:
        return Outcome(generated, time.monotonic() - began, error=exc.message)
    finally:
        sandbox(home, "down")


def row(outcome: Outcome) -> list[str]:
    """One line of the table: the incident's figures, and ok, the misses or the error."""
    generated, scored = outcome.generated, outcome.score
    faults = ",".join(generated.kinds) or "control"
    if scored is None:
        return [str(generated.seed), faults, *["-"] * 6, f"{outcome.seconds:.0f}", "ERROR"]
    impact = f"{scored.damaged_listed}/{scored.damaged}" if scored.damaged else "-"
    return [
        str(generated.seed),
        faults,
        ",".join(sorted(scored.true_causes)) or "-",
        ",".join(sorted(scored.named_causes)) or "-",
        f"{scored.cause_recall:.2f}/{scored.cause_precision:.2f}",
        impact + (" cap" if scored.sweep_capped and scored.damaged else ""),
        str(len(scored.invalid)),
        str(len(scored.control_mitigations)) if scored.control else "-",
        f"{outcome.seconds:.0f}",
        "ok" if not scored.misses() else "miss",
    ]


HEADERS = [
    "seed",
    "faults",
    "struck",
    "named",
    "cause R/P",
    "impact",
    "invalid",
    "ctl mit",
    "s",
    "",
]


def table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [HEADERS, *rows]) for i in range(len(HEADERS))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
        for line in [HEADERS, *rows]
    )


def report(outcomes: list[Outcome]) -> int:
    """Print the table and the figures against the targets; the exit status."""
    print(table([row(o) for o in outcomes]))
    for outcome in outcomes:
        if outcome.score is not None and outcome.score.misses():
            print(f"  seed {outcome.generated.seed}: {'; '.join(outcome.score.misses())}")
        if outcome.error:
            print(f"  seed {outcome.generated.seed}: ERROR {outcome.error}")
    failed = [o for o in outcomes if o.score is None]
    summary = Summary(tuple(o.score for o in outcomes if o.score is not None))
    controls = sum(1 for o in outcomes if o.score is not None and o.score.control)
    print(
        f"\n{len(outcomes)} incidents ({controls} healthy controls), "
        f"{len(failed)} failed workloads, {sum(o.seconds for o in outcomes):.0f}s"
    )
    print(f"{'figure':<28}{'value':>8}  {'target':<8}  result")
    for target, value in summary.figures():
        shown = "n/a" if value is None else f"{value:.3g}"
        if failed:
            verdict = f"FAIL ({len(failed)} failed workloads)"
        else:
            verdict = "PASS" if target.met(value) else "FAIL"
        print(f"{target.name:<28}{shown:>8}  {target.describe():<8}  {verdict}")
    return 1 if failed else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenarios", type=int, default=50, help="how many incidents")
    parser.add_argument("--seed", type=int, default=0, help="the first seed")
    parser.add_argument("--keep", type=Path, help="keep the homes and records here (new folder)")
    args = parser.parse_args()
    if args.scenarios < 1 or args.seed < 0:
        parser.error("--scenarios must be at least 1 and --seed at least 0")
    if args.keep is not None and args.keep.exists():
        parser.error(f"{args.keep} exists; --keep needs a new folder")
    with tempfile.TemporaryDirectory(prefix="exportnb-accuracy-") as scratch:
        folder = args.keep or Path(scratch)
        outcomes = []
        for n, seed in enumerate(range(args.seed, args.seed + args.scenarios), 1):
            step = f"[{n}/{args.scenarios}] seed {seed}:"
            outcome = diagnose(generate(seed), folder, step)
            outcomes.append(outcome)
            progress(f"{step} {outcome.score.verdict() if outcome.score else outcome.error}")
    sys.exit(report(outcomes))


if __name__ == "__main__":
    main()
