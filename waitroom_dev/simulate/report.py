"""Turning a rehearsal's gathered data into its report (JSON) and the text a person reads."""

from __future__ import annotations

from collections import Counter
from typing import Any

from shared.sessions import Status
from waitroom_dev.simulate import sale_report
from waitroom_dev.simulate.fairness import place_of
from waitroom_dev.simulate.invariants import (
    Summary,
    UserOutcome,
    checkout_intervals,
    fifo_violations,
    is_lost,
    peak_concurrency,
    rate_series,
    waiters,
)
from waitroom_dev.simulate.model import RunData

EXAMPLES = 10  # offending users listed by name in the report


def outcomes(data: RunData) -> tuple[list[UserOutcome], Counter[str]]:
    """One outcome per user who joined, and the join failures by gRPC code."""
    joined = []
    failures: Counter[str] = Counter()
    ranks = data.draw.ranks if data.draw else []
    for trace in data.traces:
        if not trace.session_id:
            failures[trace.join_error or "CANCELLED (run ended while retrying)"] += 1
            continue
        record = data.records.get(trace.session_id)
        joined.append(
            UserOutcome(
                user_id=trace.user_id,
                join_sent_s=trace.join_sent,
                ready_seen_s=trace.ready_at,
                saw_final=Status(trace.last_status).terminal,
                status=int(record.status) if record else 0,
                ticket=record.ticket if record else 0,
                queued_ms=record.queued_ms if record else 0,
                admitted_ms=record.admitted_ms if record else 0,
                finished_ms=record.finished_ms if record else 0,
                reason=record.reason if record else "",
                abandons=trace.abandons,
                estimate_s=trace.estimate_s,
                place=place_of(record.ticket, ranks) if record else 0,
            )
        )
    return joined, failures


def build(data: RunData) -> dict[str, Any]:
    """The report: counts, the three safety checks, latencies and the time series."""
    config, stand_in, stats = data.config, data.stand_in, data.crowd.stats
    joined, join_failures = outcomes(data)
    status = Counter(o.status for o in joined)
    admitted = [o for o in joined if o.admitted_ms]
    lost = [o.user_id for o in joined if is_lost(o)]
    violations = fifo_violations(waiters(joined))
    peak_records = peak_concurrency(checkout_intervals(joined))
    cap = data.event.max_concurrent
    admitted_ids = {sid for sid, r in data.records.items() if r.admitted_ms}
    expired = [o for o in joined if o.status == Status.EXPIRED]

    problems = []
    if lost:
        problems.append(f"{len(lost)} users never saw READY or a final status")
    if violations:
        problems.append(f"{len(violations)} FIFO violations")
    if max(data.max_in_checkout, peak_records) > cap:
        problems.append(
            f"checkout went over its cap: {max(data.max_in_checkout, peak_records)} > {cap}"
        )
    if join_failures:
        problems.append(f"{sum(join_failures.values())} users could not join")
    if data.config.users > len(data.traces):
        problems.append(f"{data.config.users - len(data.traces)} users never arrived (timeout)")
    if stand_in.failure is not None:
        problems.append(f"the checkout stand-in failed: {stand_in.failure!r}")
    sale = sale_report.sale_day(data, joined)
    problems += sale.pop("problems")
    sale_series = sale.pop("series")

    start_ms = int(data.started * 1000)
    return {
        "event_id": config.event_id,
        "run_id": data.run_id,
        "users": config.users,
        "arrival": config.arrival,
        "join_rate": config.rate if config.arrival == "ramp" else None,
        "mode": config.mode,
        "duration_seconds": round(data.ended - data.started, 3),
        "clean": not problems,
        "problems": problems,
        "joined": len(joined),
        "join_failures": dict(join_failures),
        "admitted": len(admitted),
        "completed": status[Status.COMPLETED],
        "failed": status[Status.FAILED],
        "expired_in_checkout": sum(1 for o in expired if o.admitted_ms),
        "expired_in_queue": sum(1 for o in expired if not o.admitted_ms),
        "cancelled": status[Status.CANCELLED],
        "in_checkout_at_end": status[Status.READY],
        "queued_at_end": status[Status.QUEUED],
        "lost": len(lost),
        "lost_users": lost[:EXAMPLES],
        "fifo_violations": len(violations),
        "fifo_examples": [
            {"admitted_place": a.place, "overtaken_place": b.place}
            for a, b in violations[:EXAMPLES]
        ],
        **sale,
        "checkout": {
            "cap": cap,
            "rate_limit": data.event.rate,  # admissions per second the event allows
            "max_sampled": data.max_in_checkout,
            "max_from_records": peak_records,
            "samples": data.sample_count,
            "redis_errors": data.redis_errors,
        },
        "wait_seconds": Summary.of(
            o.ready_seen_s - o.join_sent_s for o in joined if o.ready_seen_s is not None
        ).to_json(),
        "server_wait_seconds": Summary.of(
            (o.admitted_ms - o.queued_ms) / 1000 for o in admitted
        ).to_json(),
        "ready_notice_ms": Summary.of(
            o.ready_seen_s * 1000 - o.admitted_ms for o in admitted if o.ready_seen_s
        ).to_json(2),
        "join_latency_ms": Summary.of(stats.join_ms).to_json(2),
        "status_latency_ms": Summary.of(stats.status_ms).to_json(2),
        "stream_first_update_ms": Summary.of(stats.stream_first_ms).to_json(2),
        "stream_updates": stats.stream_updates,
        "stream_reconnects": stats.reconnects,
        "rpc_errors": dict(stats.errors),
        "checkout_stand_in": {
            "ready_seen": len(stand_in.seen),
            "duplicates": stand_in.duplicates,
            "completed_sent": sum(1 for t in stand_in.sent.values() if t.endswith("completed")),
            "failed_sent": sum(1 for t in stand_in.sent.values() if t.endswith("failed")),
            "silent": stand_in.silent,
            "send_errors": stand_in.send_errors,
            "ready_missing": len(admitted_ids - set(stand_in.seen)),
        },
        "series": {
            "t": [s.t for s in data.samples],
            "queue_length": [s.queue_length for s in data.samples],
            "in_checkout": [s.in_checkout for s in data.samples],
            "admission_rate": rate_series((o.admitted_ms for o in admitted), start_ms),
            **sale_series,
        },
    }


def _summary(report: dict[str, Any], name: str, unit: str) -> str:
    s = report[name]
    if not s["count"]:
        return "no samples"
    return (
        f"p50 {s['p50']:.1f}  p95 {s['p95']:.1f}  p99 {s['p99']:.1f}  "
        f"max {s['max']:.1f} {unit}  (n={s['count']})"
    )


def _verdict(ok: bool) -> str:
    return "ok" if ok else "FAIL"


def human(report: dict[str, Any]) -> str:
    """The report as a person reads it at the end of a run."""
    r, c, s = report, report["checkout"], report["checkout_stand_in"]
    arrival = r["arrival"] + (f" at {r['join_rate']:g}/s" if r["join_rate"] else "")
    peak = max(c["max_sampled"], c["max_from_records"])
    errors = ", ".join(f"{k} x{v}" for k, v in sorted(r["rpc_errors"].items())) or "none"
    lines = [
        f"Sale rehearsal on {r['event_id']} (run {r['run_id']}): {r['users']} users, "
        f"{arrival} arrival, {r['mode']} status, {r['duration_seconds']:.1f} s",
        f"  joined              {r['joined']}  (join failures: {sum(r['join_failures'].values())})",
        f"  admitted            {r['admitted']}",
        f"  checkout ended      completed {r['completed']}, failed {r['failed']}, "
        f"expired {r['expired_in_checkout']}; still in checkout {r['in_checkout_at_end']}",
        f"  left the queue      cancelled {r['cancelled']}, expired waiting "
        f"{r['expired_in_queue']}; still queued {r['queued_at_end']}",
        f"  lost users          {r['lost']:<8} {_verdict(r['lost'] == 0)}",
        f"  FIFO violations     {r['fifo_violations']:<8} {_verdict(r['fifo_violations'] == 0)}",
        f"  max in checkout     {peak} of {c['cap']}  ({c['max_sampled']} in {c['samples']} "
        f"samples, {c['max_from_records']} from records)  {_verdict(peak <= c['cap'])}",
        f"  wait join->READY    {_summary(r, 'wait_seconds', 's')}",
        f"  server wait         {_summary(r, 'server_wait_seconds', 's')}",
        f"  READY noticed after {_summary(r, 'ready_notice_ms', 'ms')}",
        f"  join latency        {_summary(r, 'join_latency_ms', 'ms')}",
        f"  status latency      {_summary(r, 'status_latency_ms', 'ms')}",
        f"  stream 1st update   {_summary(r, 'stream_first_update_ms', 'ms')}",
        f"  checkout stand-in   {s['ready_seen']} queue.ready seen ({s['duplicates']} repeats, "
        f"{s['ready_missing']} missing), {s['completed_sent']} completed, "
        f"{s['failed_sent']} failed, {s['silent']} silent",
        *sale_report.lines(r),
        f"  RPC errors          {errors}",
    ]
    if r["clean"]:
        lines.append("CLEAN: no FIFO violation, never over the cap, nobody lost")
    else:
        lines.append("NOT CLEAN: " + "; ".join(r["problems"]))
    return "\n".join(lines)
