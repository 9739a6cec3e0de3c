"""``banditctl demo``: watch banditd learn from simulated MovieLens users."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import click

from banditd.admin_cli.cli_support import (
    EXIT_USAGE,
    RESULTS_DIR,
    CliError,
    database_options,
    err_console,
    print_json,
    print_table,
    run,
)
from banditd.server.demo_experiment import DEMO_ID


def _find_movielens(path: str | None) -> Path:
    from banditd.admin_cli.offline.movielens_fetch import DatasetUnavailable, locate_ml100k

    try:
        found = locate_ml100k(path)
    except DatasetUnavailable as exc:
        raise CliError(str(exc), EXIT_USAGE) from exc
    if not found.exists():
        raise CliError(
            f"no MovieLens data at {found}: pass --movielens PATH (ml-100k u.data/u.item, "
            "ratings.csv/movies.csv or RecBole .inter/.item), or set BANDITD_MOVIELENS",
            EXIT_USAGE,
        )
    return found


async def _experiment_arms(db, experiment_id: str, new_arms: tuple[str, ...]) -> tuple[str, ...]:
    """The arms of the running experiment ``experiment_id``, created with ``new_arms``
    when it does not exist."""
    from banditd.server.experiment import ExperimentSpec
    from banditd.server.experiment_store import (
        ExperimentNotFound,
        change_status,
        create_experiment,
        get_experiment,
    )

    async with db.connection() as conn:
        try:
            experiment = await get_experiment(conn, experiment_id)
        except ExperimentNotFound:
            spec = ExperimentSpec(
                id=experiment_id, name="MovieLens demo", arms=new_arms,
                policies=("thompson", "egreedy", "ucb", "control"), reward_window_seconds=3600,
                notes="created by `banditctl demo`",
            )
            await create_experiment(conn, spec, actor="demo")
            await change_status(conn, experiment_id, "start", actor="demo")
            return new_arms
    if experiment.status != "running":
        raise CliError(
            f"experiment {experiment_id!r} is {experiment.status}; pass a new "
            "--experiment-id to start a fresh demo", EXIT_USAGE,
        )
    return experiment.spec.arms


@click.command("demo")
@click.option("--address", envvar="BANDITD_ADDRESS", default="127.0.0.1:50051",
              show_default=True, help="banditd gRPC address (from `make serve`).")
@click.option("--seconds", default=60.0, show_default=True, type=click.FloatRange(1, 86_400),
              help="How long to simulate users.")
@click.option("--wait", "wait_seconds", default=300.0, show_default=True,
              type=click.FloatRange(0, 3600),
              help="How long to wait for the server to report SERVING (`make serve` builds "
                   "first on a fresh clone).")
@click.option("--movielens", "movielens_path", default=None,
              help="MovieLens data (default: $BANDITD_MOVIELENS, ../shared/data/ml-100k, "
                   "else ml-100k fetched once from the recbole wheel on PyPI).")
@click.option("--arms", "n_arms", default=10, show_default=True, type=click.IntRange(2, 1000),
              help="Arms of a new experiment = this many most-rated movies (an existing "
                   "experiment keeps its own).")
@click.option("--threshold", default=4.0, show_default=True, type=float,
              help="A rating at or above this is a reward of 1.")
@click.option("--concurrency", default=8, show_default=True, type=click.IntRange(1, 256),
              help="Simulated users in flight at once.")
@click.option("--experiment-id", default=DEMO_ID, show_default=True,
              help="The experiment to drive (created when it does not exist).")
@click.option("--out", "out_path", default=f"{RESULTS_DIR}/demo.png", show_default=True,
              type=click.Path(dir_okay=False, path_type=Path), help="Where to write the PNG.")
@click.option("--seed", type=int, default=None, help="Seed for the simulated users.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@database_options
def demo_command(address, seconds, wait_seconds, movielens_path, n_arms, threshold,
                 concurrency, experiment_id, out_path, seed, as_json, db) -> None:
    """Simulate MovieLens users against a running banditd and watch the policies learn."""
    from rich.live import Live

    from banditd.admin_cli.demo_simulation import (
        DemoStats,
        build_users,
        drive,
        plot,
        render,
        top_movie_arms,
        wait_until_serving,
    )
    from banditd.admin_cli.offline.movielens import MovieLensFormatError, read_movielens

    path = _find_movielens(movielens_path)
    try:
        data = read_movielens(path)
    except MovieLensFormatError as exc:
        raise CliError(str(exc), EXIT_USAGE) from exc
    if not as_json:
        err_console.print(f"waiting for banditd at {address} (`make serve` starts it) ...")
    if not asyncio.run(wait_until_serving(address, wait_seconds)):
        raise CliError(f"no banditd is serving at {address} after {wait_seconds:g} s: "
                       "is `make serve` running? (or pass --address HOST:PORT)")
    arms = run(_experiment_arms(db, experiment_id, top_movie_arms(data, n_arms)))
    try:
        users = build_users(data, arms, threshold)
    except ValueError as exc:
        raise CliError(f"{path}: {exc}", EXIT_USAGE) from exc
    if not users.users:
        raise CliError(f"no user in {path} rated two of the top {len(arms)} movies", EXIT_USAGE)

    stats = DemoStats()

    async def simulate() -> None:
        await asyncio.sleep(1.2)  # servers pick up a new experiment within a second
        stats.started = time.monotonic()
        task = asyncio.create_task(
            drive(address, experiment_id, users, seconds, concurrency, stats, seed))
        if as_json:
            await task
            return
        with Live(render(stats, experiment_id, seconds, users.titles), refresh_per_second=4,
                  console=err_console) as live:
            while not task.done():
                await asyncio.sleep(0.25)
                live.update(render(stats, experiment_id, seconds, users.titles))
        await task

    asyncio.run(simulate())
    summary = stats.summary()
    if stats.decisions == 0:
        raise CliError(f"no decision succeeded against {address}: is `make serve` running?")
    image = plot(stats, out_path)
    summary["plot"] = str(image)
    if as_json:
        print_json(summary)
        return
    print_table(
        f"demo summary: {summary['decisions']} decisions in {summary['seconds']:.0f}s "
        f"({summary['decisions_per_s']:.0f}/s)",
        ("policy", "decisions", "reward rate", "cumulative reward"),
        ((p, s["decisions"], "-" if s["reward_rate"] is None else f"{s['reward_rate']:.3f}",
          f"{s['cumulative_reward']:.0f}") for p, s in summary["policies"].items()),
    )
    click.echo(f"plot: {image}")
    click.echo(f"next: banditctl experiment summary {experiment_id}; "
               f"banditctl decide {experiment_id}")
