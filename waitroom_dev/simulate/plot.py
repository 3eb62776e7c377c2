"""``waitroom simulate --plot``: queue length, users in checkout and admission rate over time."""

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
    fig, (queue_ax, checkout_ax, rate_ax) = plt.subplots(3, 1, figsize=(10, 8), sharex=True)
    fig.suptitle(
        f"{report['event_id']}: {report['users']} users, {report['arrival']} arrival, "
        f"{report['mode']} status ({'clean' if report['clean'] else 'NOT CLEAN'})"
    )
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
    rate_ax.axhline(limit, color="tab:red", linestyle="--", label=f"rate limit {limit:g}/s")
    rate_ax.set_ylim(bottom=0, top=max(limit, max(rates, default=0)) * 1.15)
    rate_ax.set_ylabel("admitted per second")
    rate_ax.set_xlabel("seconds since the first join")
    rate_ax.legend(loc="best")

    for ax in (queue_ax, checkout_ax, rate_ax):
        ax.grid(True, alpha=0.3)
    fig.tight_layout()
    return fig


def plot(report: dict[str, Any], path: Path) -> None:
    """Draw the run's time series into a PNG at ``path``."""
    import matplotlib.pyplot as plt

    fig = figure(report)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=100)
    finally:
        plt.close(fig)
