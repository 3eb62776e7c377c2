"""``waitroom simulate --plot``: queue length, users in checkout and admission rate over time,
and beside them each admitted user's estimated wait against the real one.

A scheduled opening is a dotted line across the time panels (the draw is in the title); users
dropped as abandoned are counted per second under the admissions."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def figure(report: dict[str, Any]) -> Any:
    """The run's time series as a matplotlib Figure: queue, checkout (with its cap) and
    admissions per second (with the event's rate limit). The caller closes it."""
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    series = report["series"]
    cap = report["checkout"]["cap"]
    fig = plt.figure(figsize=(15, 8))
    grid = fig.add_gridspec(3, 2, width_ratios=(2, 1))
    queue_ax = fig.add_subplot(grid[0, 0])
    checkout_ax = fig.add_subplot(grid[1, 0], sharex=queue_ax)
    rate_ax = fig.add_subplot(grid[2, 0], sharex=queue_ax)
    fig.suptitle(_title(report))
    queue_ax.plot(series["t"], series["queue_length"], color="tab:blue")
    queue_ax.set_ylabel("queue length")

    checkout_ax.plot(series["t"], series["in_checkout"], color="tab:green", label="in checkout")
    checkout_ax.axhline(cap, color="tab:red", linestyle="--", label=f"cap {cap}")
    checkout_ax.set_ylabel("users in checkout")
    checkout_ax.set_ylim(bottom=0, top=max(cap, max(series["in_checkout"], default=0)) * 1.15)
    checkout_ax.legend(loc="best")

    rates = series["admission_rate"]
    limit = report["checkout"]["rate_limit"]
    rate_ax.bar(
        [i + 0.5 for i in range(len(rates))], rates, width=1.0, color="tab:orange",
        label="admitted",
    )  # fmt: skip
    dropped = series.get("abandoned_rate", [])
    if any(dropped):
        rate_ax.bar(
            [i + 0.5 for i in range(len(dropped))], dropped, width=1.0, bottom=0,
            color="tab:purple", alpha=0.7, label="dropped as abandoned",
        )  # fmt: skip
    rate_ax.axhline(limit, color="tab:red", linestyle="--", label=f"rate limit {limit:g}/s")
    top = max(limit, max(rates, default=0), max(dropped, default=0))
    rate_ax.set_ylim(bottom=0, top=top * 1.15)
    rate_ax.set_ylabel("admitted per second")
    rate_ax.set_xlabel("seconds since the first join")
    rate_ax.legend(loc="best")

    opening = report.get("opening")
    for ax in (queue_ax, checkout_ax, rate_ax):
        if opening is not None:
            ax.axvline(opening["opens_t"], color="black", linestyle=":", label="opening")
        ax.grid(True, alpha=0.3)
    if opening is not None:
        queue_ax.legend(loc="best")
    _estimates(fig.add_subplot(grid[:, 1]), report)
    fig.tight_layout()
    return fig


def _title(report: dict[str, Any]) -> str:
    title = (
        f"{report['event_id']}: {report['users']} users, {report['arrival']} arrival, "
        f"{report['mode']} status ({'clean' if report['clean'] else 'NOT CLEAN'})"
    )
    opening, abandoned = report.get("opening"), report.get("abandoned")
    if opening is not None and opening.get("drawn"):
        verified = "verified" if opening["verify"].get("matches") else "NOT verified"
        title += (
            f"\ndraw of {opening['entrants']} pre-queue entrants {verified}, "
            f"{opening['prequeue_overtaken']} admitted ahead of them, "
            f"{opening['fifo_after_opening']} FIFO violations after the opening"
        )
    if abandoned and abandoned["users"]:
        title += (
            f"\n{abandoned['users']} abandoning: {abandoned['dropped']} dropped, "
            f"{abandoned['admitted_in_time']} admitted before their "
            f"{abandoned['idle_timeout_seconds']:g} s idle timeout, "
            f"{abandoned['admitted_late']} after"
        )
    return title


def _estimates(ax: Any, report: dict[str, Any]) -> None:
    """Estimated wait at join against the real wait, one dot per admitted user."""
    points = report["series"].get("estimates", {"estimate": [], "waited": [], "prequeue": []})
    groups = [("after the opening" if report.get("opening") else "users", False, "tab:blue")]
    if report.get("opening"):
        groups.append(("pre-queue", True, "tab:orange"))
    rows = list(zip(points["estimate"], points["waited"], points["prequeue"], strict=True))
    for label, pre, color in groups:
        chosen = [(w, e) for e, w, p in rows if p is pre]
        if chosen:
            ax.scatter(*zip(*chosen, strict=True), s=6, alpha=0.5, color=color, label=label)
    top = max([*points["estimate"], *points["waited"], 1]) * 1.05
    ax.plot([0, top], [0, top], color="black", linewidth=1, label="estimate = real")
    ax.fill_between(
        [0, top], [0, top * 0.75], [0, top * 1.25], color="grey", alpha=0.15, label="within 25%"
    )
    error = report.get("estimate_error", {}).get("all")
    if error and error["count"]:
        ax.set_title(
            f"wait estimated at join: error median {error['abs_p50']:.0%}, "
            f"p90 {error['abs_p90']:.0%}",
            fontsize=10,
        )
    ax.set_xlim(0, top)
    ax.set_ylim(0, top)
    ax.set_xlabel("real wait, join to admission (s)")
    ax.set_ylabel("estimated wait at join (s)")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper left")


def plot(report: dict[str, Any], path: Path) -> None:
    """Draw the run's time series into a PNG at ``path``."""
    import matplotlib.pyplot as plt

    fig = figure(report)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=100)
    finally:
        plt.close(fig)
