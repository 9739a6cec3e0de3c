"""``banditctl load-movielens``, ``replay``, ``evaluate`` and ``export``: offline studies.

- ``load-movielens PATH``: read a MovieLens edition (ml-100k ``u.data``/``u.item``,
  ``ratings.csv``/``movies.csv``, RecBole ``.inter``/``.item``) into PostgreSQL,
  replacing any dataset of the same name in one transaction.
- ``replay``: the replay method (Li et al. 2011) on a uniformly logged stream built
  from ratings (``--dataset`` loaded in PostgreSQL, or ``--path`` read from files
  without a database): table, JSON, and a PNG of cumulative reward rate.
- ``export``: an experiment's decisions joined with their rewards as Parquet,
  hive-partitioned by experiment and day (:mod:`banditd.admin_cli.export`).
- ``evaluate ID``: off-policy estimates (IPS, SNIPS, DM, DR) of candidate policies
  on an experiment's logged decisions, read from the database or from an export
  (``--from-parquet DIR``).

Exit codes follow :mod:`banditd.admin_cli.cli_support`: 1 run-time failure, 2 bad input
(usage, a file that is not MovieLens or not an export), 3 unknown experiment,
dataset or export, 5
database unreachable or not migrated.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from banditd.admin_cli.cli_support import (
    EXIT_NOT_FOUND,
    EXIT_USAGE,
    RESULTS_DIR,
    CliError,
    console,
    database_options,
    err_console,
    json_option,
    json_text,
    parse_list,
    print_json,
    print_table,
    run,
    warn,
)
from banditd.admin_cli.commands_experiment import parse_policy_params

DEFAULT_REPLAY_POLICIES = "thompson,ucb,egreedy,control"


# --------------------------------------------------------------------------- helpers


def _fmt(x: float | None, digits: int = 4) -> str:
    return "-" if x is None or not math.isfinite(x) else f"{x:.{digits}f}"


def _interval(low: float | None, high: float | None, digits: int = 4) -> str:
    if low is None or high is None or not (math.isfinite(low) and math.isfinite(high)):
        return "-"
    return f"[{low:.{digits}f}, {high:.{digits}f}]"


def _kernel_policies(option: str, names: tuple[str, ...], extra: tuple[str, ...] = ()) -> None:
    """BadParameter unless every name is a core_ext policy (or one of ``extra``)."""
    try:
        from banditd.admin_cli.offline.replay import policy_names

        known = policy_names()
    except ImportError as exc:  # the extension modules are not built
        raise CliError(
            f"the core_ext kernels cannot be imported ({exc}); build them with `pip install -e .`"
        ) from exc
    allowed = (*known, *extra)
    unknown = [n for n in names if n not in allowed]
    if unknown:
        raise click.BadParameter(
            f"unknown policy {', '.join(repr(u) for u in unknown)}; choose from "
            f"{', '.join(allowed)}",
            param_hint=option,
        )
    if len(set(names)) != len(names):
        raise click.BadParameter(f"a policy is listed twice: {', '.join(names)}", param_hint=option)


def _check_params(params: dict[str, dict[str, Any]], policies: tuple[str, ...]) -> None:
    from banditd.core_ext.policies import params_from_dict

    for policy, raw in params.items():
        if policy not in policies:
            raise click.BadParameter(
                f"parameters given for {policy!r}, which is not among the policies "
                f"({', '.join(policies)})",
                param_hint="--param",
            )
        try:
            params_from_dict(policy, raw)
        except (ValueError, TypeError) as exc:
            raise click.BadParameter(f"{policy} parameters: {exc}", param_hint="--param") from exc


@contextmanager
def _progress(enabled: bool, *columns: Any) -> Iterator[Progress | None]:
    """A rich progress display on stderr (so --json stdout stays clean)."""
    if not enabled:
        yield None
        return
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        *columns,
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=True,
    ) as progress:
        yield progress


def _file_progress(progress: Progress | None) -> Callable[[Path, int, int], None] | None:
    if progress is None:
        return None
    tasks: dict[Path, TaskID] = {}

    def update(path: Path, done: int, total: int) -> None:
        if path not in tasks:
            tasks[path] = progress.add_task(f"reading {path.name}", total=total)
        progress.update(tasks[path], completed=done)

    return update


def _read_files(path: Path, quiet: bool):
    """Read a MovieLens source with a progress bar; malformed input → exit 2."""
    from banditd.admin_cli.offline.movielens import MovieLensFormatError, read_movielens

    try:
        with _progress(not quiet, DownloadColumn()) as progress:
            return read_movielens(path, _file_progress(progress))
    except MovieLensFormatError as exc:
        raise CliError(f"malformed MovieLens input: {exc}", EXIT_USAGE) from exc


# --------------------------------------------------------------------------- load-movielens


@click.command("load-movielens")
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option(
    "--dataset",
    help="Name to store the dataset under (default: the directory's name, e.g. ml-100k). "
    "Loading a name again replaces that dataset.",
)
@click.option("--quiet", is_flag=True, help="No progress bars.")
@database_options
@json_option
def load_movielens_command(
    path: Path, dataset: str | None, quiet: bool, db, as_json: bool
) -> None:
    """Load the MovieLens ratings and movies at PATH into PostgreSQL.

    PATH is a directory or a ratings file of GroupLens ml-100k (u.data + u.item),
    ml-latest / ml-25m (ratings.csv + movies.csv) or RecBole atomic files
    (NAME.inter + NAME.item); the format is detected. All or nothing: a malformed
    file or a failed write leaves the database as it was.
    """
    from banditd.admin_cli.offline.movielens_store import (
        default_dataset_name,
        load_dataset,
        validate_dataset_name,
    )

    name = dataset or default_dataset_name(path)
    try:
        validate_dataset_name(name)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--dataset") from exc
    started = time.monotonic()
    data = _read_files(path, quiet or as_json)

    async def load():
        async with db.connection() as conn:
            with _progress(not (quiet or as_json), MofNCompleteColumn()) as progress:
                task = progress.add_task("loading rows", total=None) if progress else None

                def on_rows(done: int, total: int) -> None:
                    if progress is not None and task is not None:
                        progress.update(task, completed=done, total=total)

                return await load_dataset(conn, name, data, on_progress=on_rows)

    info = run(load())
    elapsed = time.monotonic() - started
    if as_json:
        print_json({**info.to_json(), "elapsed_seconds": elapsed})
        return
    print_table(
        f"MovieLens dataset {info.name!r} loaded in {elapsed:.1f} s",
        ["dataset", "format", "ratings", "users", "movies", "source"],
        [[info.name, info.source_format, info.n_ratings, info.n_users,
          info.n_movies if info.has_movies else "(no movie file)", info.source_path]],
    )


# --------------------------------------------------------------------------- replay


@click.command("replay")
@click.option(
    "--policies",
    default=DEFAULT_REPLAY_POLICIES,
    show_default=True,
    help="Comma-separated core_ext policies to replay.",
)
@click.option("--arms", "n_arms", type=click.IntRange(min=2), default=20, show_default=True,
              help="Number of arms: the N most-rated movies (or genres).")
@click.option("--arm-kind", type=click.Choice(["movie", "genre"]), default="movie",
              show_default=True, help="Arms are movies or genres.")
@click.option("--runs", type=click.IntRange(1, 100_000), default=10, show_default=True,
              help="Independent runs (new stream and seeds each) for the intervals.")
@click.option("--dataset", help="A dataset loaded with load-movielens.")
@click.option("--path", "source_path", type=click.Path(exists=True, path_type=Path),
              help="Read MovieLens files directly (no database), "
              "e.g. ../shared/data/ml-100k.")
@click.option("--reward-threshold", type=click.FloatRange(0.5, 5.0, min_open=True), default=4.0,
              show_default=True, help="Reward 1 when rating >= this, else 0.")
@click.option("--sampling", type=click.Choice(["without-replacement", "bootstrap"]),
              default="without-replacement", show_default=True,
              help="Use each rating at most once, or draw rewards with replacement.")
@click.option("--events", type=click.IntRange(min=1),
              help="Logged stream length "
              "(a cap without replacement; exact with bootstrap).")
@click.option("--param", "params", multiple=True,
              help="Policy parameter POLICY.NAME=VALUE (repeatable), "
              "e.g. egreedy.epsilon=0.05.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Seed of streams and policies.")
@click.option("--out-dir", type=click.Path(file_okay=False, path_type=Path),
              default=Path(RESULTS_DIR, "replay"),
              show_default=True, help="Where replay.json and replay.png are written.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@database_options
@json_option
def replay_command(
    policies: str,
    n_arms: int,
    arm_kind: str,
    runs: int,
    dataset: str | None,
    source_path: Path | None,
    reward_threshold: float,
    sampling: str,
    events: int | None,
    params: tuple[str, ...],
    seed: int,
    out_dir: Path,
    quiet: bool,
    db,
    as_json: bool,
) -> None:
    """Replay policies on a uniformly logged MovieLens stream (Li et al. 2011).

    Arms are the N most-rated movies (or genres), reward = rating >= threshold.
    Each policy walks the log and keeps an event only when it picks the logged arm,
    learning from kept events only; its reward rate over kept events estimates its
    online reward rate without bias because the log is uniformly random.
    """
    from banditd.admin_cli.offline.bandit_problem import (
        ProblemConfig,
        StreamConfig,
        problem_from_data,
    )
    from banditd.admin_cli.offline.plots import plot_replay
    from banditd.admin_cli.offline.replay import ReplayConfig, core_ext_factory, run_replay

    if (dataset is None) == (source_path is None):
        raise click.UsageError("give exactly one of --dataset NAME or --path PATH")
    names = parse_list(policies, "policies")
    _kernel_policies("--policies", names)
    policy_params = parse_policy_params(params)
    _check_params(policy_params, names)
    try:
        problem_config = ProblemConfig(n_arms, arm_kind, reward_threshold)  # type: ignore[arg-type]
        stream_config = StreamConfig(sampling.replace("-", "_"), events)  # type: ignore[arg-type]
        config = ReplayConfig(policies=names, runs=runs, seed=seed, stream=stream_config)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc

    quiet = quiet or as_json
    if source_path is not None:
        data = _read_files(source_path, quiet)
        source = str(source_path)
        try:
            problem = problem_from_data(data, problem_config)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--arms / --arm-kind") from exc
    else:
        assert dataset is not None
        problem = _problem_from_database(db, dataset, problem_config)
        source = f"dataset {dataset}"

    with _progress(not quiet, MofNCompleteColumn()) as progress:
        task = progress.add_task("replaying", total=runs * len(names)) if progress else None

        def on_run(done: int, total: int) -> None:
            if progress is not None and task is not None:
                progress.update(task, completed=done)

        factory = core_ext_factory(policy_params, problem.arm_ids)
        result = run_replay(problem, config, factory=factory, on_progress=on_run, source=source)

    out_dir.mkdir(parents=True, exist_ok=True)
    png = plot_replay(result, out_dir / "replay.png")
    payload = {**result.to_json(), "png": str(png)}
    (out_dir / "replay.json").write_text(json_text(payload) + "\n")
    if as_json:
        print_json(payload)
        return
    _print_replay(result, png, out_dir / "replay.json")


def _problem_from_database(db, dataset: str, problem_config):
    from banditd.admin_cli.offline.bandit_problem import build_problem
    from banditd.admin_cli.offline.movielens_store import DatasetNotFoundError, fetch_arm_counts

    async def fetch():
        async with db.connection() as conn:
            return await fetch_arm_counts(
                conn, dataset, problem_config.arm_kind, problem_config.reward_threshold
            )

    try:
        counts = run(fetch())
        return build_problem(counts, problem_config)
    except DatasetNotFoundError as exc:
        raise CliError(str(exc), EXIT_NOT_FOUND) from exc
    except ValueError as exc:
        raise CliError(str(exc), EXIT_USAGE) from exc


def _print_replay(result, png: Path, json_path: Path) -> None:
    problem = result.problem
    confidence = round(100 * (1 - result.config.alpha))
    rows = []
    for row in result.rows():
        lift = row["lift_vs_control"]
        lift_text = "-"
        if lift is not None:
            lift_text = f"{lift:+.4f} {_interval(row['lift_ci_low'], row['lift_ci_high'])}"
        rows.append([
            row["policy"],
            f"{row['kept_events']:.0f}",
            _fmt(row["reward_rate"]),
            _interval(row["ci_low"], row["ci_high"]),
            lift_text,
        ])
    print_table(
        f"Replay on {result.source}: {problem.n_arms} {problem.kind} arms, reward = rating >= "
        f"{problem.threshold:g}, {result.config.runs} runs of ~{result.stream_lengths.mean():.0f} "
        f"logged events",
        ["policy", "kept events (mean)", "reward rate", f"{confidence}% CI over runs",
         "lift vs control (paired)"],
        rows,
    )
    console.print(
        f"best arm {problem.best_value:.4f} ({problem.arm_labels[problem.best_arm]}), "
        f"uniform {problem.uniform_value:.4f}; {result.elapsed_seconds:.1f} s"
    )
    console.print(f"wrote {png} and {json_path}")


# --------------------------------------------------------------------------- evaluate


@click.command("evaluate")
@click.argument("experiment_id")
@click.option("--policies", help="Candidate policies: core_ext policies plus greedy and uniform "
              "(default: the experiment's policies, greedy, uniform).")
@click.option("--confidence", type=click.FloatRange(0.5, 1.0, max_open=True), default=0.95,
              show_default=True, help="Confidence level of the intervals.")
@click.option("--min-propensity", type=click.FloatRange(0.0, 1.0, max_open=True), default=0.01,
              show_default=True, help="Warn about logged propensities below this.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Seed of the fold split and the kernels.")
@click.option("--from-parquet", "parquet_dir",
              type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Read the log from a `banditctl export` directory instead of the database.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@database_options
@json_option
def evaluate_command(
    experiment_id: str,
    policies: str | None,
    confidence: float,
    min_propensity: float,
    seed: int,
    parquet_dir: Path | None,
    quiet: bool,
    db,
    as_json: bool,
) -> None:
    """Estimate candidate policies' value from experiment EXPERIMENT_ID's logged decisions.

    Off-policy estimates with IPS, self-normalised IPS, the direct method and doubly
    robust, each with a delta-method interval and the effective sample size of the
    importance weights. Each candidate is scored as the arm distribution it would
    play after learning from the log (2-fold cross-fitted). The log is read from the
    database, or with --from-parquet from an export (the same estimates on the same
    rows).
    """
    from banditd.admin_cli.offline.estimators import EstimationConfig
    from banditd.admin_cli.offline.evaluate import (
        FIXED_CANDIDATES,
        EvaluateConfig,
        evaluate_experiment,
        return_freed_arrays,
    )

    return_freed_arrays()
    candidates = parse_list(policies, "policies") if policies is not None else None
    if candidates is not None:
        _kernel_policies("--policies", candidates, FIXED_CANDIDATES)
    config = EvaluateConfig(
        seed=seed,
        estimation=EstimationConfig(alpha=1 - confidence, min_propensity=min_propensity),
    )
    logged = _read_log(db, experiment_id, parquet_dir, quiet or as_json, config)
    if candidates is None:
        candidates = (*logged.policies, *(c for c in FIXED_CANDIDATES if c not in logged.policies))
    report = evaluate_experiment(logged, candidates, config)
    if as_json:
        print_json(report.to_json())
        return
    if logged.n_decisions == 0:
        click.echo(f"{experiment_id} has no rewarded decisions yet: nothing to evaluate "
                   "(run it for a while, or `banditctl demo --experiment-id "
                   f"{experiment_id}`)")
        return
    for message in report.warnings:
        warn(message)
    print_table(
        f"Logged decisions of {experiment_id} (reward in [{logged.reward_min:g}, "
        f"{logged.reward_max:g}])",
        ["served by policy", "decisions", "mean reward"],
        [[p, n, _fmt(v)] for p, (n, v) in report.logged_values.items()],
    )
    level = f"{round(100 * confidence)}% CI"
    rows = [
        [r["candidate"], r["estimator"], _fmt(r["value"]), _interval(r["ci_low"], r["ci_high"]),
         r["n"], _fmt(r["ess"], 1)]
        for r in report.rows()
    ]
    print_table(
        f"Off-policy estimates for {experiment_id}",
        ["candidate", "estimator", "value", level, "events", "ESS"],
        rows,
    )
    seen: set[str] = set(report.warnings)
    for cand in report.candidates:
        for est in cand.estimates.values():
            for message in est.warnings:
                if message not in seen:
                    seen.add(message)
                    warn(f"{cand.candidate}: {message}")


def _read_log(db, experiment_id: str, parquet_dir: Path | None, quiet: bool, config):
    """The experiment's log from the database or an export, with a row counter,
    pooled under ``config`` (its seed draws the folds as the rows are read)."""
    from banditd.admin_cli.offline.evaluate import (
        ExportNotFound,
        fetch_logged_experiment,
        read_parquet_experiment,
    )

    with _progress(not quiet, MofNCompleteColumn()) as progress:
        task = progress.add_task("reading decisions", total=None) if progress else None

        def on_rows(rows: int) -> None:
            if progress is not None and task is not None:
                progress.advance(task, rows)

        if parquet_dir is None:
            async def fetch():
                async with db.connection() as conn:
                    return await fetch_logged_experiment(conn, experiment_id, on_rows, config)

            return run(fetch())
        try:
            return read_parquet_experiment(parquet_dir, experiment_id, on_rows, config)
        except ExportNotFound as exc:
            raise CliError(str(exc), EXIT_NOT_FOUND) from exc
        except (ValueError, OSError) as exc:
            raise CliError(f"cannot read the export: {exc}", EXIT_USAGE) from exc


# --------------------------------------------------------------------------- export


def _writable_directory(out: Path) -> None:
    """Create ``out`` if needed and check a file can be written there (exit 2 if not)."""
    import tempfile

    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".banditctl-probe-"):
            pass
    except OSError as exc:
        raise CliError(f"cannot write to --out {out}: {exc.strerror or exc}; choose a "
                       "directory you can write to", EXIT_USAGE) from exc


@click.command("export")
@click.option("--experiment", "experiment_id", required=True, help="Experiment id.")
@click.option("--since", type=click.DateTime(formats=["%Y-%m-%d"]), required=True,
              help="First UTC day to export (YYYY-MM-DD).")
@click.option("--until", type=click.DateTime(formats=["%Y-%m-%d"]), required=True,
              help="Last UTC day to export, included (YYYY-MM-DD).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Directory of the export (DIR/experiment=ID/date=YYYY-MM-DD/*.parquet).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@database_options
@json_option
def export_command(
    experiment_id: str, since, until, out: Path, quiet: bool, db, as_json: bool
) -> None:
    """Export an experiment's decisions, joined with their rewards, as Parquet.

    One file per UTC day from --since to --until, hive-partitioned by experiment and
    date (the schema is in the README). Each day is streamed in batches and renamed
    into place when complete: rerunning an export replaces those days whole.
    """
    from banditd.admin_cli.export import day_path, export_experiment_day, exported_experiment
    from banditd.server.log_partitions import log_partitions

    first, last = since.date(), until.date()
    if first > last:
        raise click.BadParameter(f"--since {first} is after --until {last}",
                                 param_hint="--since / --until")
    _writable_directory(out)
    quiet = quiet or as_json

    async def export():
        async with db.connection() as conn:
            experiment = await exported_experiment(conn, experiment_id)
            days = sorted({p.day for p in await log_partitions(conn)
                           if p.table == "decisions" and first <= p.day <= last})
            written = []
            with _progress(not quiet, MofNCompleteColumn(), TextColumn("{task.fields[rows]:,} rows")
                           ) as progress:
                task = (progress.add_task("exporting days", total=len(days), rows=0)
                        if progress else None)
                total = 0

                def on_rows(rows: int) -> None:
                    nonlocal total
                    total += rows
                    if progress is not None and task is not None:
                        progress.update(task, rows=total)

                for day in days:
                    rows = await export_experiment_day(conn, experiment, day, out, on_rows)
                    if rows:
                        written.append({"date": day, "rows": rows,
                                        "path": str(day_path(out, experiment.id, day))})
                    if progress is not None and task is not None:
                        progress.advance(task)
            return written

    try:
        written = run(export())
    except OSError as exc:
        raise CliError(f"writing the export under {out} failed: {exc}") from exc
    rows = sum(d["rows"] for d in written)
    if as_json:
        print_json({"experiment_id": experiment_id, "out": str(out), "since": first,
                    "until": last, "rows": rows, "days": written})
        return
    print_table(
        f"Exported {rows:,} decisions of {experiment_id} ({first} .. {last}) to {out}",
        ["date", "rows", "file"],
        [[d["date"], f"{d['rows']:,}", d["path"]] for d in written],
    )
    if not written:
        click.echo(f"{experiment_id} has no decisions between {first} and {last}")


OFFLINE_COMMANDS = (load_movielens_command, replay_command, evaluate_command, export_command)
