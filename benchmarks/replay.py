"""Replay study on MovieLens 100K (Li, Chu, Langford & Wang 2011 replay method).

Every ``core_ext`` policy (thompson, ucb, egreedy with their default parameters,
and uniform control) is replayed on uniformly logged streams built from the
ratings (construction and unbiasedness argument: ``admin_cli/offline/bandit_problem.py``):

- ``movies``: the 20 most-rated movies, reward = rating >= 4, each rating used at
  most once (about 6,600 logged events, ~330 kept per policy and run);
- ``genres``: the 10 most-rated genres, same reward, ratings used at most once;
- ``movies-long``: the 20 movies again with rewards drawn with replacement from
  each movie's ratings, for a longer horizon (short: 20,000 logged events; full:
  100,000, i.e. ~5,000 kept).

Reported per policy: kept events, reward rate with its 95 % Student-t interval over
runs, and the paired lift over control (absolute and relative) with its interval.
The figures are compared with two baselines of the same run and data: uniform play
(what control must reproduce: a check that replay is unbiased) and the best arm.

``python -m benchmarks.replay [--short] [--path DIR]`` reads ml-100k from ``--path``,
else ``$BANDITD_MOVIELENS``, else ``../shared/data/ml-100k``, else a copy fetched once
from the ``recbole==1.2.1`` wheel on PyPI (``banditd.admin_cli.offline.movielens_fetch``); writes
``benchmarks/results/replay.json`` and ``replay.png``.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BANDITS = ("thompson", "ucb", "egreedy")
POLICIES = (*BANDITS, "control")


@dataclass(frozen=True)
class Study:
    name: str
    arms: int
    arm_kind: str
    sampling: str
    events: int | None  # logged events per run (None: until a rating pool runs out)
    runs: int


def studies(short: bool) -> tuple[Study, ...]:
    if short:
        return (
            Study("movies", 20, "movie", "without_replacement", None, 30),
            Study("genres", 10, "genre", "without_replacement", None, 10),
            Study("movies-long", 20, "movie", "bootstrap", 20_000, 10),
        )
    return (
        Study("movies", 20, "movie", "without_replacement", None, 200),
        Study("genres", 10, "genre", "without_replacement", None, 100),
        Study("movies-long", 20, "movie", "bootstrap", 100_000, 50),
    )


def run_study(data, study: Study, seed: int):
    from banditd.admin_cli.offline.bandit_problem import (
        ProblemConfig,
        StreamConfig,
        problem_from_data,
    )
    from banditd.admin_cli.offline.replay import ReplayConfig, run_replay

    problem = problem_from_data(data, ProblemConfig(study.arms, study.arm_kind, 4.0))
    config = ReplayConfig(policies=POLICIES, runs=study.runs, seed=seed,
                          stream=StreamConfig(study.sampling, study.events))
    return run_replay(problem, config, source=study.name)


def summarise(study: Study, result) -> dict[str, Any]:
    """The study's figures: per policy, and each bandit against control."""
    by_name = {s.policy: s for s in result.policies}
    control = by_name["control"].reward_rate.mean
    policies = {}
    for s in result.policies:
        entry: dict[str, Any] = {
            "kept_events_mean": float(s.kept.mean()),
            "reward_rate": s.reward_rate.to_json(),
        }
        if s.lift_vs_control is not None:
            lift = s.lift_vs_control
            entry["lift_vs_control"] = lift.to_json()
            entry["relative_lift_pct"] = 100 * lift.mean / control if control > 0 else None
        policies[s.policy] = entry
    full = result.to_json()
    return {
        "study": study.name,
        "arms": study.arms,
        "arm_kind": study.arm_kind,
        "sampling": study.sampling,
        "runs": study.runs,
        "logged_events_mean": full["stream_events_mean"],
        "best_arm_value": result.problem.best_value,
        "uniform_value": result.problem.uniform_value,
        "policies": policies,
        "replay": full,
        "elapsed_s": result.elapsed_seconds,
    }


def print_table(study: Study, result) -> None:
    problem = result.problem
    print(f"\n== {study.name}: {problem.n_arms} {problem.kind} arms, {study.runs} runs, "
          f"~{result.stream_lengths.mean():.0f} logged events/run, best arm "
          f"{problem.best_value:.4f}, uniform {problem.uniform_value:.4f}")
    print(f"{'policy':>9} {'kept':>7} {'reward rate':>11} {'95% CI':>19} "
          f"{'lift vs control':>16} {'95% CI':>19} {'rel.':>7}")
    control = next(s for s in result.policies if s.policy == "control").reward_rate.mean
    for s in result.policies:
        r = s.reward_rate
        line = (f"{s.policy:>9} {s.kept.mean():>7.0f} {r.mean:>11.4f} "
                f"[{r.low:.4f}, {r.high:.4f}]")
        if s.lift_vs_control is not None:
            lift = s.lift_vs_control
            line += (f" {lift.mean:>+16.4f} [{lift.low:+.4f}, {lift.high:+.4f}] "
                     f"{100 * lift.mean / control:>+6.1f}%")
        print(line, flush=True)


def check_targets(study: Study, result) -> list[tuple[str, bool, str]]:
    """Control must reproduce uniform play within 4 standard errors (replay is unbiased,
    Li et al. 2011 Thm. 1); on the primary problem Thompson must beat control."""
    targets = []
    control = next(s for s in result.policies if s.policy == "control")
    se = float(control.reward_rates.std(ddof=1)) / math.sqrt(study.runs)
    gap = control.reward_rate.mean - result.problem.uniform_value
    targets.append((f"{study.name}: control replays uniform play", abs(gap) <= 4 * se,
                    f"control {control.reward_rate.mean:.4f} vs uniform "
                    f"{result.problem.uniform_value:.4f} (gap {gap:+.4f}, 4 SE = {4 * se:.4f})"))
    if study.name == "movies":
        thompson = next(s for s in result.policies if s.policy == "thompson").lift_vs_control
        assert thompson is not None
        targets.append((f"{study.name}: thompson above control", thompson.low > 0,
                        f"lift {thompson.mean:+.4f} [{thompson.low:+.4f}, {thompson.high:+.4f}]"))
    return targets


def main(argv: list[str] | None = None) -> int:
    from banditd.admin_cli.offline.movielens import MovieLensFormatError, read_movielens
    from banditd.admin_cli.offline.movielens_fetch import DatasetUnavailable, locate_ml100k
    from banditd.admin_cli.offline.plots import plot_replay_panels
    from benchmarks.report import RESULTS_DIR, print_target, write_report

    parser = argparse.ArgumentParser(prog="python -m benchmarks.replay", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--short", action="store_true", help="CI mode: fewer runs (< 90 s)")
    parser.add_argument("--path", type=Path, default=None,
                        help="MovieLens 100K directory (any supported edition); default "
                             "$BANDITD_MOVIELENS, ../shared/data/ml-100k, else fetched once "
                             "from the recbole wheel on PyPI")
    parser.add_argument("--seed", type=int, default=20110209, help="seed of streams and policies")
    args = parser.parse_args(argv)
    try:
        args.path = locate_ml100k(args.path)
    except DatasetUnavailable as exc:
        print(exc, file=sys.stderr)
        return 2
    if not args.path.exists():
        print(f"MovieLens 100K not found at {args.path}: pass --path or set BANDITD_MOVIELENS",
              file=sys.stderr)
        return 2
    started = time.monotonic()
    try:
        data = read_movielens(args.path)
    except MovieLensFormatError as exc:
        print(f"cannot read {args.path}: {exc}", file=sys.stderr)
        return 1
    print(f"ml-100k: {len(data.ratings)} ratings, {data.n_users} users, {data.n_movies} movies "
          f"({data.source_format}, {args.path})")
    reports, panels, targets = [], [], []
    for study in studies(args.short):
        result = run_study(data, study, args.seed)
        print_table(study, result)
        reports.append(summarise(study, result))
        panels.append((result, f"{study.name}: {result.problem.n_arms} {result.problem.kind} "
                               f"arms, {study.runs} runs ({study.sampling.replace('_', ' ')})"))
        targets.extend(check_targets(study, result))
    png = plot_replay_panels(panels, RESULTS_DIR / "replay.png")
    print()
    for name, ok, detail in targets:
        print_target(name, ok, detail)
    elapsed = time.monotonic() - started
    path = write_report("replay", {
        "mode": "short" if args.short else "full",
        "dataset": str(args.path),
        "source_format": data.source_format,
        "reward": "rating >= 4",
        "seed": args.seed,
        "policy_parameters": "core_ext defaults (thompson Beta(1,1); ucb c = sqrt 2; "
                             "egreedy epsilon 0.1; control uniform)",
        "studies": reports,
        "targets": [{"name": n, "pass": ok, "detail": d} for n, ok, d in targets],
        "elapsed_s": elapsed,
        "plot": png.name,
    })
    print(f"\nwrote {path} and {png} in {elapsed:.1f} s")
    return 0 if all(ok for _, ok, _ in targets) else 1


if __name__ == "__main__":
    sys.exit(main())
