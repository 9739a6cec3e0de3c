"""``banditctl experiment ...`` and ``banditctl launch``: create, inspect, start, stop."""

from __future__ import annotations

import re
import secrets
from pathlib import Path
from typing import Any

import click

from banditd.admin_cli.cli_support import (
    EXIT_USAGE,
    CliError,
    database_options,
    json_option,
    parse_list,
    print_json,
    print_table,
    run,
)
from banditd.server.experiment import Experiment, ExperimentConfigError, ExperimentSpec
from banditd.server.experiment_store import (
    change_status,
    create_experiment,
    events,
    get_experiment,
    list_experiments,
)


def parse_policy_params(values: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """('thompson.alpha0=2', 'egreedy.epsilon=0.05') -> {'thompson': {'alpha0': 2.0}, ...}."""
    params: dict[str, dict[str, Any]] = {}
    for item in values:
        match = re.fullmatch(r"([a-z]+)\.([a-z_0-9]+)=(.+)", item)
        if not match:
            raise click.BadParameter(f"{item!r} is not POLICY.NAME=VALUE (e.g. thompson.alpha0=2)")
        policy, name, raw = match.groups()
        value: Any = raw
        if name != "default_arm":  # arm names stay text; every other parameter is a number
            try:
                value = float(raw)
            except ValueError as exc:
                raise click.BadParameter(f"{item!r}: {name} must be a number") from exc
        params.setdefault(policy, {})[name] = value
    return params


def _parse_floats(value: str | None, what: str) -> tuple[float, ...] | None:
    if value is None:
        return None
    try:
        return tuple(float(v) for v in parse_list(value, what))
    except ValueError as exc:
        raise click.BadParameter(f"{what} must be comma-separated numbers: {value!r}") from exc


def _read_arms(arms: str | None, arms_file: Path | None) -> tuple[str, ...]:
    if arms and arms_file:
        raise click.BadParameter("give either --arms or --arms-file, not both")
    if arms_file:
        lines = arms_file.read_text(encoding="utf-8").splitlines()
        return tuple(line.strip() for line in lines if line.strip() and not line.startswith("#"))
    if arms:
        return parse_list(arms, "arms")
    raise click.BadParameter("an experiment needs arms: --arms a,b,c or --arms-file FILE")


def spec_options(func):
    """The options shared by ``experiment create`` and ``launch``."""
    options = [
        click.option("--arms", help="Comma-separated arm names."),
        click.option("--arms-file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                     help="File with one arm name per line."),
        click.option("--policies", default="thompson,egreedy,ucb,control", show_default=True,
                     help="Policies under test (thompson, ucb, egreedy), with control."),
        click.option("--split", help="Traffic share of each policy, e.g. 0.4,0.2,0.2,0.2 "
                     "(default: equal)."),
        click.option("--traffic", default=1.0, show_default=True, type=float,
                     help="Share of users inside the experiment, in (0, 1]."),
        click.option("--param", "params", multiple=True,
                     help="Policy parameter POLICY.NAME=VALUE (repeatable): thompson.alpha0, "
                     "thompson.beta0, ucb.c, egreedy.epsilon, egreedy.decay, control.default_arm."),
        click.option("--reward-min", default=0.0, show_default=True, type=float),
        click.option("--reward-max", default=1.0, show_default=True, type=float),
        click.option("--reward-window", default=86_400.0, show_default=True, type=float,
                     help="Seconds a decision waits for its reward."),
        click.option("--default-reward", default=0.0, show_default=True, type=float,
                     help="Reward applied when the window closes without one."),
        click.option("--duration", type=float, help="Duration in days."),
        click.option("--notes", default="", help="Free-text notes."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def build_spec(experiment_id: str, name: str, **o) -> ExperimentSpec:
    """The validated spec of ``experiment create`` and ``launch`` (exit code 2 on bad
    input, before any database is touched)."""
    try:
        spec = ExperimentSpec(
            id=experiment_id,
            name=name,
            arms=_read_arms(o["arms"], o["arms_file"]),
            policies=parse_list(o["policies"], "policies"),
            policy_split=_parse_floats(o["split"], "split"),
            traffic_pct=o["traffic"],
            policy_params=parse_policy_params(o["params"]),
            reward_min=o["reward_min"],
            reward_max=o["reward_max"],
            reward_window_seconds=o["reward_window"],
            default_reward=o["default_reward"],
            duration_days=o["duration"],
            notes=o["notes"],
        )
        spec.validate_for_write()
    except ExperimentConfigError as exc:
        raise CliError(str(exc), EXIT_USAGE) from exc
    return spec


@click.group("experiment")
def experiment_group() -> None:
    """Create, inspect, start and stop experiments."""


@experiment_group.command("create")
@click.argument("experiment_id")
@click.option("--name", required=True, help="Human-readable name.")
@spec_options
@click.option("--start", is_flag=True, help="Start it right away.")
@database_options
@json_option
def create_command(experiment_id: str, name: str, start: bool, db, as_json: bool, **o) -> None:
    """Create experiment EXPERIMENT_ID (as a draft, or running with --start)."""
    spec = build_spec(experiment_id, name, **o)

    async def create() -> Experiment:
        async with db.connection() as conn:
            experiment = await create_experiment(conn, spec)
            if start:
                experiment = await change_status(conn, spec.id, "start")
            return experiment

    try:
        experiment = run(create())
    except ValueError as exc:  # id taken
        raise CliError(str(exc), EXIT_USAGE) from exc
    _print_created(experiment, as_json)


def _print_created(experiment: Experiment, as_json: bool) -> None:
    if as_json:
        print_json(experiment.to_dict())
    else:
        click.echo(experiment.id)


@click.command("launch")
@click.option("--name", required=True, help="Human-readable name (the id is derived from it).")
@spec_options
@database_options
@json_option
def launch_command(name: str, db, as_json: bool, **o) -> None:
    """Create and start an experiment in one step; prints its id."""
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:100] or "experiment"
    spec = build_spec(f"{slug}-{secrets.token_hex(3)}", name, **o)

    async def launch() -> Experiment:
        async with db.connection() as conn, conn.transaction():
            await create_experiment(conn, spec)
            return await change_status(conn, spec.id, "start")

    _print_created(run(launch()), as_json)


@experiment_group.command("list")
@database_options
@json_option
def list_command(db, as_json: bool) -> None:
    """List experiments."""

    async def fetch() -> list[Experiment]:
        async with db.connection() as conn:
            return await list_experiments(conn)

    experiments = run(fetch())
    if as_json:
        print_json([e.to_dict() for e in experiments])
        return
    print_table(
        None,
        ("id", "name", "status", "policies", "arms", "traffic", "start", "end"),
        (
            (e.id, e.spec.name, e.status, ",".join(e.spec.policies), len(e.spec.arms),
             f"{e.spec.traffic_pct:.0%}", _when(e.start_at), _when(e.end_at))
            for e in experiments
        ),
    )


@experiment_group.command("show")
@click.argument("experiment_id")
@database_options
@json_option
def show_command(experiment_id: str, db, as_json: bool) -> None:
    """Show an experiment's configuration, state and audit trail."""

    async def fetch():
        async with db.connection() as conn:
            return await get_experiment(conn, experiment_id), await events(conn, experiment_id)

    experiment, trail = run(fetch())
    audit = [dict(r) for r in trail]
    if as_json:
        print_json({**experiment.to_dict(), "audit": audit})
        return
    print_table(
        f"experiment {experiment.id}", ("field", "value"),
        ((k, v) for k, v in experiment.to_dict().items()),
    )
    print_table(
        "audit trail", ("at", "actor", "action", "old", "new", "reason"),
        ((_when(r["at"]), r["actor"], r["action"], r["old_value"], r["new_value"], r["reason"])
         for r in audit),
    )


def _status_command(action: str, help_text: str):
    @click.argument("experiment_id")
    @click.option("--reason", default=None, help="Why (kept in the audit trail).")
    @database_options
    @json_option
    def command(experiment_id: str, reason: str | None, db, as_json: bool) -> None:
        async def change() -> Experiment:
            async with db.connection() as conn:
                return await change_status(conn, experiment_id, action, reason=reason)

        experiment = run(change())
        if as_json:
            print_json(experiment.to_dict())
        else:
            click.echo(f"{experiment.id}: {experiment.status}")

    command.__doc__ = help_text
    return experiment_group.command(action)(command)


_status_command("start", "Start a draft experiment: its policies begin serving.")
_status_command("stop", "Stop an experiment: every server moves its users to control.")


def _when(value) -> str:
    return value.strftime("%Y-%m-%d %H:%M") if value else "-"
