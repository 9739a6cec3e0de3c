"""``banditd select`` and ``banditd reward``: one call to a running server, from a shell.

The quickest way to try banditd without grpcurl or code. Exit codes follow the gRPC
status of the answer: 0 ok, 1 any other failure, 2 INVALID_ARGUMENT, 3 NOT_FOUND,
4 FAILED_PRECONDITION, 5 UNAVAILABLE or DEADLINE_EXCEEDED (no server there, or it is
draining or starting: retry).
"""

from __future__ import annotations

import json
import sys

import click
import grpc

from banditd.server.quickstart import DEFAULT_ADDRESS

_EXIT_CODES = {
    grpc.StatusCode.INVALID_ARGUMENT: 2,
    grpc.StatusCode.NOT_FOUND: 3,
    grpc.StatusCode.FAILED_PRECONDITION: 4,
    grpc.StatusCode.UNAVAILABLE: 5,
    grpc.StatusCode.DEADLINE_EXCEEDED: 5,
}


def _call_options(func):
    func = click.option("--timeout", default=5.0, show_default=True,
                        type=click.FloatRange(0.01, 600),
                        help="Deadline of the call in seconds.")(func)
    func = click.option("--json", "as_json", is_flag=True, help="Print the answer as JSON.")(func)
    return click.option("--address", envvar="BANDITD_ADDRESS", default=DEFAULT_ADDRESS,
                        show_default=True, show_envvar=True,
                        help="host:port of a running banditd.")(func)


def _call(address: str, method: str, call):
    """``call(client)``'s answer; a failed call exits with its code and one line."""
    from banditd.client import Client

    with Client(address) as client:
        try:
            return call(client)
        except grpc.RpcError as err:
            hint = ""
            if err.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                hint = f" (is banditd serving on {address}? `make serve` starts one)"
            click.echo(f"error: {method} {err.code().name}: {err.details()}{hint}", err=True)
            sys.exit(_EXIT_CODES.get(err.code(), 1))


def _parse_context(items: tuple[str, ...]) -> dict[str, str]:
    context = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--context")
        context[key] = value
    return context


@click.command("select")
@click.argument("experiment_id")
@click.argument("user_id")
@click.option("--candidates", help="Comma-separated arms to choose among (default: all).")
@click.option("--context", "context_items", multiple=True, help="Request context KEY=VALUE "
              "(repeatable), logged with the decision.")
@click.option("--quiet", "-q", is_flag=True, help="Print only the decision id (for $(...)).")
@_call_options
def select_command(experiment_id, user_id, candidates, context_items, quiet, address,
                   as_json, timeout) -> None:
    """Ask a running banditd which arm USER_ID gets in EXPERIMENT_ID."""
    arms = [c.strip() for c in candidates.split(",")] if candidates else None
    context = _parse_context(context_items)
    d = _call(address, "Select", lambda client: client.select(
        experiment_id, user_id, candidates=arms, context=context, deadline=timeout))
    answer = {"arm": d.arm, "policy": d.policy, "served_by": d.served_by,
              "propensity": d.propensity, "decision_id": d.decision_id}
    if quiet:
        click.echo(d.decision_id)
    elif as_json:
        click.echo(json.dumps(answer, indent=2))
    else:
        for key, value in answer.items():
            click.echo(f"{key + ':':<13}{value}")


@click.command("reward")
@click.argument("decision_id")
@click.argument("value", type=float)
@_call_options
def reward_command(decision_id, value, address, as_json, timeout) -> None:
    """Report VALUE as the outcome of DECISION_ID (from `banditd select`).

    Idempotent: sending it again answers DUPLICATE and counts nothing twice."""
    status = _call(address, "Reward", lambda client: client.reward(
        decision_id, value, deadline=timeout)).upper()
    if as_json:
        click.echo(json.dumps({"decision_id": decision_id, "status": status}))
    elif status == "DUPLICATE":
        click.echo(f"{status}: this decision's reward was already counted; nothing changed")
    else:
        click.echo(f"{status}: reward {value:g} committed")
