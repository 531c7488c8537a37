"""``exportnb mitigate ACTION`` and ``exportnb journal``: the mitigation panel's flow at a shell.

There is one ``mitigate`` subcommand per mitigation of the registry
(:mod:`exportnb.mitigation.registry`), made from it: its help, an option per parameter
(``--job`` repeatable, flags without a value, defaults shown), then ``--incident``,
``--yes`` and ``--json``. Each plans the action (what changes, how widely, the runbook
command), asks for a confirmation (``--yes`` answers it), applies it once and prints the
result; all of it lands in the incident's journal. It is a thin call into
:mod:`exportnb.mitigation.lifecycle`, the code path the notebook's panel and automatic runs use.

Exit codes: 0 applied, or applied before (nothing done again); 1 cancelled at the prompt;
2 invalid input; 3 a job or bucket not found; 4 a precondition failed (nothing changed:
already paused, nothing to revert, not allowed by policy, a broken journal); 5 the sandbox
is not running; 6 the platform failed while applying (the failed result is journaled and
the action may be tried again).
"""

from __future__ import annotations

import sys
from typing import Any

import click

from exportnb.core import codec
from exportnb.core.console import echo_json, echo_table, handles_errors, shorten
from exportnb.core.errors import PreconditionFailed
from exportnb.mitigation import lifecycle as mitigations
from exportnb.mitigation import registry
from exportnb.mitigation.journal import read_journal
from exportnb.mitigation.registry import Mitigation, Param
from exportnb.platform import get_platform

CANCELLED_EXIT = 1
COMMON = [
    click.Option(
        ["--incident", "incident"],
        required=True,
        metavar="ID",
        help="The incident this mitigation belongs to (its journal).",
    ),
    click.Option(["--yes", "-y", "yes"], is_flag=True, help="Apply without asking (confirmed)."),
    click.Option(
        ["--json", "as_json"],
        is_flag=True,
        help="Print the outcome (plan, result) as JSON on stdout.",
    ),
]
"""The options every mitigation takes: incident, confirmation, output."""


class MitigateGroup(click.Group):
    """``exportnb mitigate``: one subcommand per mitigation of the registry, made from it."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *registry.names()})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        found = super().get_command(ctx, cmd_name)
        if found is None and cmd_name in registry.names():
            found = command_for(registry.get(cmd_name))
        return found


@click.group(
    "mitigate", cls=MitigateGroup, context_settings={"help_option_names": ["-h", "--help"]}
)
def mitigate() -> None:
    """Plan, confirm and apply a mitigation of an incident; every step is journaled.

    Applying the same action with the same arguments again for one incident does
    nothing (it was applied); `exportnb journal INCIDENT` shows what was done.
    """


def command_for(mitigation: Mitigation) -> click.Command:
    """The subcommand of one mitigation: an option per parameter, then the common ones."""

    @handles_errors
    def run(incident: str, yes: bool, as_json: bool, **values: Any) -> None:
        given = {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}
        params = mitigation.form_params(given)
        _mitigate(mitigation.name, incident, params, yes=yes, as_json=as_json)

    options = [option_for(p) for p in mitigation.params]
    return click.Command(
        mitigation.name, callback=run, params=[*options, *COMMON], help=mitigation.help
    )


def option_for(param: Param) -> click.Option:
    """A parameter as a command-line option: ``--job`` repeats, a flag takes no value."""
    how: dict[str, Any] = {"help": param.cli.help or param.help, "metavar": param.cli.metavar}
    if param.kind == "flag":
        return click.Option([param.flag, param.name], is_flag=True, **how)
    if param.kind == "ids":
        return click.Option([param.flag, param.name], multiple=True, **how)
    shown = param.default is not None
    return click.Option(
        [param.flag, param.name],
        type=int if param.kind == "int" else str,
        default=param.default,
        show_default=shown,
        required=param.cli.required,
        **how,
    )


def _mitigate(
    action: str, incident: str, params: dict[str, Any], *, yes: bool, as_json: bool
) -> None:
    """Plan, confirm, apply; print the outcome; exit with its code."""
    platform = get_platform()
    try:
        plan = mitigations.plan(platform, incident, action, params)
        click.echo(mitigations.describe(plan), err=as_json)
        if not plan.already_applied and not yes and not _confirmed(action):
            outcome = mitigations.decline(plan, platform=platform)
        else:
            outcome = mitigations.apply(platform, plan, confirmed=True)
    finally:
        platform.close()
    _finish(outcome, as_json)


def _confirmed(action: str) -> bool:
    try:
        return click.confirm(f"Apply {action}?", default=False, err=True)
    except click.Abort:
        return False


def _finish(outcome: Any, as_json: bool) -> None:
    if as_json:
        echo_json(codec.encode(outcome))
    else:
        click.echo(outcome.message)
    if outcome.status in ("applied", "already_applied"):
        return
    if outcome.status == "cancelled":
        sys.exit(CANCELLED_EXIT)
    if outcome.status == "failed" and outcome.result is not None:
        click.echo(f"Error: {outcome.result.error}", err=True)
        sys.exit(outcome.result.exit_code or 6)
    click.echo(f"Error: {outcome.message}", err=True)
    sys.exit(PreconditionFailed.exit_code)


@click.command("journal")
@click.argument("incident")
@click.option("--json", "as_json", is_flag=True, help="Print the entries as JSON.")
@handles_errors
def journal(incident: str, as_json: bool) -> None:
    """Print an incident's mitigation journal, its hash chain verified.

    Exit code 4 when the chain is broken (the journal was edited).
    """
    entries = read_journal(incident)
    if as_json:
        echo_json(codec.encode(entries))
        return
    echo_table(
        ("SEQ", "AT", "OPERATOR", "KIND", "ACTION", "OUTCOME", "KEY", "DETAIL"),
        [
            (e.seq, e.at, e.operator, e.kind, e.action, e.outcome, e.key[:12], _detail(e.detail))
            for e in entries
        ],
        empty=f"No journal entries for {incident}.",
    )
    if entries:
        click.echo(f"{len(entries)} entries, hash chain verified (last {entries[-1].sha256[:16]})")


def _detail(detail: dict[str, Any]) -> str:
    text = detail.get("error") or detail.get("summary") or detail.get("why") or ""
    if not text and "reverts" in detail:
        text = f"{detail.get('kind')} {detail.get('target')}"
    return shorten(str(text), 70)
