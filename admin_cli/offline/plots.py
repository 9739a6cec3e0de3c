"""PNG figures for offline studies (matplotlib's Agg canvas; no pyplot global state)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from banditd.admin_cli.offline.replay import ReplayResult

if TYPE_CHECKING:
    from matplotlib.axes import Axes


def plot_replay(result: ReplayResult, path: Path | str, *, title: str | None = None) -> Path:
    """Cumulative reward rate against kept events, one line per policy (mean over runs,
    shaded pointwise interval), with the oracle best arm and uniform play for scale."""
    return plot_replay_panels([(result, title)], path)


def plot_replay_panels(
    panels: Sequence[tuple[ReplayResult, str | None]], path: Path | str
) -> Path:
    """One replay figure per panel, side by side, in one PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig = Figure(figsize=(8 * len(panels), 5), dpi=110)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (result, title) in zip(axes, panels, strict=True):
        draw_replay(ax, result, title)
    fig.tight_layout()
    fig.savefig(path)
    return path


def draw_replay(ax: Axes, result: ReplayResult, title: str | None = None) -> None:
    """Draw one replay study on ``ax``."""
    for summary in result.policies:
        if summary.curve_x.size == 0:
            continue
        label = f"{summary.policy} ({summary.reward_rate.mean:.3f})"
        (line,) = ax.plot(summary.curve_x, summary.curve_mean, label=label, linewidth=1.6)
        ax.fill_between(
            summary.curve_x,
            summary.curve_low,
            summary.curve_high,
            color=line.get_color(),
            alpha=0.12,
            linewidth=0,
        )
    problem = result.problem
    ax.axhline(problem.best_value, color="black", linestyle="--", linewidth=0.9,
               label=f"best arm ({problem.best_value:.3f})")
    ax.axhline(problem.uniform_value, color="grey", linestyle=":", linewidth=0.9,
               label=f"uniform ({problem.uniform_value:.3f})")
    ax.set_xlabel("kept events")
    ax.set_ylabel("cumulative reward rate")
    confidence = round(100 * (1 - result.config.alpha))
    ax.set_title(
        title
        or (
            f"Replay: {problem.n_arms} {problem.kind} arms, reward = rating >= "
            f"{problem.threshold:g}, {result.config.runs} runs ({confidence}% band)"
        ),
        fontsize=10,
    )
    ax.set_ylim(max(0.0, problem.uniform_value - 0.35), min(1.02, problem.best_value + 0.15))
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
