"""The report's sale-day part: the opening and its draw, the abandoning users, wait estimates.

``sale_day`` adds to the report built by ``report.build`` (its JSON keys ``opening``,
``abandoned``, ``estimate_error``, the ``series`` it draws from, and its problems);
``lines`` is its text for a person.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from shared.timefmt import format_ms
from waitroom_dev.simulate.fairness import (
    ABANDONED,
    AbandonedCount,
    DrawOrder,
    EstimateError,
    IdleRule,
    estimate_pairs,
)
from waitroom_dev.simulate.invariants import UserOutcome, rate_series
from waitroom_dev.simulate.model import RunData


def sale_day(data: RunData, joined: Sequence[UserOutcome]) -> dict[str, Any]:
    """The sale-day figures of a run, with ``problems`` (sentences) and ``series`` (plot data)
    for the caller to merge into the report."""
    problems: list[str] = []
    start_ms = int(data.started * 1000)
    drawn = data.draw
    entrants = (drawn.entrants or 0) if drawn else 0
    opening: dict[str, Any] | None = None
    if drawn is not None:
        opening = {
            "opens_at": format_ms(drawn.opens_ms),
            "opens_t": round((drawn.opens_ms - start_ms) / 1000, 3),
            "planned_before": round(data.config.before * data.config.users),
            "drawn": bool(drawn.drawn_ms),
            "draw_delay_seconds": (
                round((drawn.drawn_ms - drawn.opens_ms) / 1000, 3) if drawn.drawn_ms else None
            ),
            "verify": drawn.verify,
        }
        if not drawn.drawn_ms:
            problems.append("the draw was not done by the end of the run")
        else:
            order = DrawOrder.of(joined, drawn.ranks)
            opening.update(order.to_json())
            if not order.permutation:
                problems.append("the drawn places are not a permutation of the pre-queue")
            if order.prequeue_overtaken:
                problems.append(
                    f"{order.prequeue_overtaken} later arrivals admitted ahead of the pre-queue"
                )
            if not drawn.verify.get("matches"):
                found = "; ".join(drawn.verify.get("problems", [])[:3])
                problems.append(f"waitroom event draw verify disagrees: {found}")

    rule = IdleRule(
        timeout_ms=round(data.event.idle_timeout_seconds * 1000),
        since_ms=data.event.idle_since_ms,
        drawn_ms=drawn.drawn_ms if drawn else 0,
        entrants=entrants,
    )
    abandoned = AbandonedCount.of(joined, rule)
    if abandoned.admitted_late:
        problems.append(
            f"{abandoned.admitted_late} abandoning users admitted after their idle timeout"
        )
    if abandoned.present_dropped:
        problems.append(f"{abandoned.present_dropped} present users dropped as abandoned")
    if abandoned.unsettled:
        problems.append(f"{abandoned.unsettled} abandoning users not settled at the end")

    pairs = estimate_pairs(joined, entrants)
    dropped_ms = [
        o.finished_ms for o in joined if o.reason == ABANDONED and not o.admitted_ms
    ]  # fmt: skip
    return {
        "opening": opening,
        "abandoned": {
            "idle_timeout_seconds": data.event.idle_timeout_seconds,
            **abandoned.to_json(),
        },
        "estimate_error": {
            "all": EstimateError.of((e, w) for e, w, _ in pairs).to_json(),
            "prequeue": EstimateError.of((e, w) for e, w, pre in pairs if pre).to_json(),
            "after_opening": EstimateError.of((e, w) for e, w, pre in pairs if not pre).to_json(),
        },
        "problems": problems,
        "series": {
            "abandoned_rate": rate_series(dropped_ms, start_ms),
            "estimates": {
                "estimate": [e for e, _, _ in pairs],
                "waited": [round(w, 3) for _, w, _ in pairs],
                "prequeue": [pre for _, _, pre in pairs],
            },
        },
    }


def _verdict(ok: bool) -> str:
    return "ok" if ok else "FAIL"


def _error(e: dict[str, Any]) -> str:
    if not e["count"]:
        return "no admitted user with an estimate"
    return (
        f"median {e['abs_p50']:.0%}  p90 {e['abs_p90']:.0%}  bias {e['median']:+.0%}  "
        f"(n={e['count']})"
    )


def lines(report: dict[str, Any]) -> list[str]:
    """The sale-day lines of the report for a person."""
    out = []
    o = report["opening"]
    if o is not None:
        out.append(
            f"  opening             {o['opens_at']} ({o['opens_t']:.1f} s into the run), "
            f"{o['planned_before']} users planned before it"
        )
        if not o["drawn"]:
            out.append("  draw                not done by the end of the run  FAIL")
        else:
            v = o["verify"]
            verified = "matches" if v.get("matches") else "; ".join(v.get("problems", [])[:2])
            out += [
                f"  draw                {o['entrants']} entrants ({o['ours']} of this run), "
                f"drawn {o['draw_delay_seconds']:.2f} s after the opening; places 1..n "
                f"{_verdict(o['permutation'])}; draw verify: {verified}  "
                f"{_verdict(bool(v.get('matches')))}",
                f"  pre-queue first     {o['prequeue_overtaken']:<8} "
                f"{_verdict(o['prequeue_overtaken'] == 0)} (later arrivals admitted ahead; "
                f"pre-queue admitted against join order: {o['out_of_join_order']:.0%} of pairs)",
                f"  FIFO after opening  {o['fifo_after_opening']:<8} "
                f"{_verdict(o['fifo_after_opening'] == 0)}",
            ]
    a = report["abandoned"]
    if a["users"] or a["present_dropped"]:
        out.append(
            f"  abandoned           {a['users']} users (idle timeout "
            f"{a['idle_timeout_seconds']:g} s): dropped {a['dropped']}, admitted before "
            f"their timeout ran out {a['admitted_in_time']} ({a['admitted_prequeue']} drawn "
            f"early in the pre-queue), after {a['admitted_late']} "
            f"{_verdict(a['admitted_late'] == 0)}; unsettled {a['unsettled']}; present "
            f"users dropped {a['present_dropped']} {_verdict(a['present_dropped'] == 0)}"
        )
    e = report["estimate_error"]
    out.append(f"  estimate error      {_error(e['all'])}")
    if o is not None:
        out.append(f"    pre-queue         {_error(e['prequeue'])}")
        out.append(f"    after opening     {_error(e['after_opening'])}")
    return out
