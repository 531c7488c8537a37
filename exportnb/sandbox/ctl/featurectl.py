"""``featurectl``: the runbook's feature flags, with TTLs and an audit trail, on the sandbox.

The runbook's line works verbatim::

    featurectl set export.fallback_bucket <bucket> --ttl 30m

VALUE is read as JSON when it parses (``true``, ``3``, ``{"a": 1}``, ``"quoted"``) and
as a plain string otherwise (``exports-fallback``). ``--output json`` prints the
versioned contract (``docs/contract.md``). Like exportctl, this featurectl always
drives the sandbox, unless ``$EXPORTNB_CTL_PLATFORM`` says otherwise (a test hook).
"""

from __future__ import annotations

import json
import re
from typing import Any

import click

from exportnb import __version__
from exportnb.core.errors import InvalidInput, NotFound
from exportnb.core.quantities import parse_ttl
from exportnb.platform import Platform, current_actor
from exportnb.platform.contract import Done
from exportnb.sandbox.ctl.exportctl import CONTEXT, reason_option, resolve_platform, using
from exportnb.sandbox.ctl.output import (
    echo_audit,
    echo_flag,
    echo_flags,
    emit,
    output_option,
    reports_errors,
)

_KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


def platform() -> Platform:
    """The platform this featurectl drives: the sandbox."""
    return resolve_platform("sandbox")


def check_key(key: str) -> str:
    if not _KEY_RE.match(key):
        raise InvalidInput(
            f"invalid flag key {key!r}: use letters, digits, '.', '_' and '-', "
            "such as export.fallback_bucket"
        )
    return key


def parse_value(text: str) -> Any:
    """``true`` -> True, ``3`` -> 3, ``exports-fallback`` -> "exports-fallback"."""
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except ValueError:
        return text


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


key_argument = click.argument("key", metavar="KEY")


@click.group(context_settings=CONTEXT)
@click.version_option(__version__, prog_name="featurectl")
def featurectl() -> None:
    """Feature flags on the sandbox platform: set with a TTL, get, list, unset, history.

    Every change is recorded in the audit trail with who, when and why. Every command
    takes --output json for the versioned JSON contract (apiVersion exportnb.dev/v1).
    Exit codes: 0 ok, 2 invalid input, 3 not found, 4 precondition failed,
    5 sandbox not running, 6 platform or storage error.
    """


@featurectl.command("set")
@key_argument
@click.argument("value", metavar="VALUE")
@click.option("--ttl", metavar="DURATION", help="Expire after this long, such as 30m or 2h.")
@reason_option
@output_option
@reports_errors
def set_flag(key: str, value: str, ttl: str | None, reason: str, output: str) -> None:
    """Set flag KEY to VALUE, optionally with a TTL.

    VALUE is JSON when it parses (true, 3, '"text"') and a plain string otherwise.
    Put -- before KEY when VALUE starts with a dash.
    """
    check_key(key)
    seconds = parse_ttl(ttl) if ttl is not None else None
    with using(platform) as p:
        flag = p.set_flag(
            key, parse_value(value), ttl=seconds, actor=current_actor(), reason=reason
        )
    emit(output, "Flag", flag, echo_flag)


@featurectl.command("get")
@key_argument
@output_option
@reports_errors
def get_flag(key: str, output: str) -> None:
    """Show flag KEY; exits 3 when it is not set."""
    with using(platform) as p:
        flag = p.get_flag(check_key(key))
    if flag is None:
        raise NotFound(f"flag {key!r} is not set")
    emit(output, "Flag", flag, echo_flag)


@featurectl.command("list")
@output_option
@reports_errors
def list_flags(output: str) -> None:
    """List the flags that are set and not expired."""
    with using(platform) as p:
        flags = p.list_flags()
    emit(output, "FlagList", flags, echo_flags)


@featurectl.command("unset")
@key_argument
@reason_option
@output_option
@reports_errors
def unset_flag(key: str, reason: str, output: str) -> None:
    """Remove flag KEY before its TTL runs out."""
    with using(platform) as p:
        p.unset_flag(check_key(key), actor=current_actor(), reason=reason)
    done = Done(action="flag.unset", target=key)
    emit(output, "Done", done, lambda _: click.echo(f"Flag {key} unset."))


@featurectl.command("history")
@key_argument
@output_option
@reports_errors
def history(key: str, output: str) -> None:
    """The audit trail of flag KEY.

    Every entry: when, who, action, old -> new, and the reason.
    """
    with using(platform) as p:
        entries = p.flag_history(check_key(key))
    emit(output, "AuditLog", entries, echo_audit)


def main() -> None:
    """Run ``featurectl``."""
    featurectl(prog_name="featurectl")


if __name__ == "__main__":
    main()
