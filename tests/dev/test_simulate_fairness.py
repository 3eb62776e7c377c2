"""The rehearsal's sale-day checks on crafted and generated inputs: the draw-aware FIFO, the
abandoning users' accounting, the estimate error, and when users arrive around an opening."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from waitroom_dev.simulate.fairness import (
    ABANDONED,
    AbandonedCount,
    DrawOrder,
    EstimateError,
    IdleRule,
    estimate_pairs,
    inversion_share,
    is_permutation,
    place_of,
    relative_error,
)
from waitroom_dev.simulate.invariants import UserOutcome, fifo_violations, waiters
from waitroom_dev.simulate.opening import AFTER_MARGIN_SECONDS, BEFORE_SPAN, arrival_offsets
from waitroom_dev.simulate.sale_report import lines

QUEUED, READY, COMPLETED, EXPIRED, CANCELLED = 1, 3, 5, 7, 8


def _user(ticket: int, **fields: object) -> UserOutcome:
    base = UserOutcome(f"u{ticket}", 0.0, None, False, QUEUED, ticket, 0, 0, 0)
    return replace(base, **fields)  # type: ignore[arg-type]


def _sale(
    ranks: list[int], later: int, gone: set[int], batch: int, start_ms: int = 10_000
) -> list[UserOutcome]:
    """A sale run the way admit.lua runs it: places in order from the head, ``batch`` places
    per call (one millisecond each, 50 ms apart); a ticket in ``gone`` is dropped as abandoned
    when reached, without taking a slot. Tickets 1..len(ranks) were the pre-queue."""
    n = len(ranks)
    ticket_at = {place: ticket for ticket, place in enumerate(ranks, start=1)}
    ticket_at |= {n + i: n + i for i in range(1, later + 1)}
    outcomes, now, taken = [], start_ms, 0
    for place in range(1, n + later + 1):
        ticket = ticket_at[place]
        if ticket in gone:
            outcomes.append(
                _user(
                    ticket, status=CANCELLED, reason=ABANDONED, finished_ms=now, abandons=True,
                    place=place_of(ticket, ranks),
                )
            )  # fmt: skip
            continue
        outcomes.append(
            _user(ticket, status=COMPLETED, admitted_ms=now, place=place_of(ticket, ranks))
        )
        taken += 1
        if taken % batch == 0:
            now += 50
    return outcomes


def test_a_place_is_the_drawn_one_for_the_prequeue_and_the_ticket_after_it() -> None:
    ranks = [3, 1, 2]
    assert [place_of(t, ranks) for t in (1, 2, 3, 4, 9)] == [3, 1, 2, 4, 9]
    assert place_of(0, ranks) == 0  # no record: no place
    assert is_permutation(ranks) and is_permutation([])
    assert not is_permutation([1, 1, 3]) and not is_permutation([1, 2, 4])


@settings(max_examples=60, deadline=None)
@given(
    st.integers(0, 40).flatmap(lambda n: st.permutations(list(range(1, n + 1)))),
    st.integers(0, 30),
    st.integers(1, 7),
    st.integers(min_value=0, max_value=2**32 - 1),  # a seed: see tests/recovery/test_plan.py
)
def test_a_draw_run_by_the_rules_is_never_flagged(
    ranks: list[int], later: int, batch: int, seed: int
) -> None:
    rng = random.Random(seed)
    gone = {t for t in range(1, len(ranks) + later + 1) if rng.random() < 0.2}
    outcomes = _sale(list(ranks), later, gone, batch)
    assert fifo_violations(waiters(outcomes)) == []
    order = DrawOrder.of(outcomes, list(ranks))
    assert (order.prequeue_overtaken, order.fifo_after_opening) == (0, 0)
    assert order.permutation and order.entrants == len(ranks) == order.ours
    # The same run read by ticket instead of place: the draw itself looks like queue jumping
    # whenever it admitted someone in a later call than a user who joined after them.
    by_ticket = [replace(o, place=0) for o in outcomes]
    jumped = any(
        a.admitted_ms and b.admitted_ms and a.ticket < b.ticket and a.admitted_ms > b.admitted_ms
        for a in by_ticket
        for b in by_ticket
    )
    if jumped:
        assert fifo_violations(waiters(by_ticket))


def test_a_late_arrival_admitted_before_the_prequeue_is_caught() -> None:
    outcomes = _sale([2, 3, 1], later=3, gone=set(), batch=1)
    # Ticket 5 (after the opening) is moved ahead of the whole pre-queue.
    moved = [replace(o, admitted_ms=1) if o.ticket == 5 else o for o in outcomes]
    order = DrawOrder.of(moved, [2, 3, 1])
    assert order.prequeue_overtaken == 1
    assert order.fifo_after_opening == 1  # it jumped ticket 4 as well
    assert len(fifo_violations(waiters(moved))) == 1
    # Two later arrivals swapped: arrival order broken, the pre-queue still first.
    swapped = {5: outcomes[4].admitted_ms, 4: outcomes[4].admitted_ms + 1}
    turned = [replace(o, admitted_ms=swapped.get(o.ticket, o.admitted_ms)) for o in outcomes]
    order = DrawOrder.of(turned, [2, 3, 1])
    assert (order.prequeue_overtaken, order.fifo_after_opening) == (0, 1)


def test_a_prequeue_user_still_waiting_is_overtaken_by_every_later_admission() -> None:
    outcomes = _sale([1, 2], later=2, gone=set(), batch=10)
    stuck = [replace(o, admitted_ms=0, status=QUEUED) if o.ticket == 2 else o for o in outcomes]
    assert DrawOrder.of(stuck, [1, 2]).prequeue_overtaken == 2


@settings(max_examples=80, deadline=None)
@given(st.lists(st.integers(0, 50), max_size=60))
def test_the_inversion_share_counts_pairs_out_of_order(values: list[int]) -> None:
    n = len(values)
    brute = sum(1 for i in range(n) for j in range(i + 1, n) if values[i] > values[j])
    pairs = n * (n - 1) // 2
    assert inversion_share(values) == pytest.approx(brute / pairs if pairs else 0.0)


def test_a_shuffle_is_about_half_out_of_order() -> None:
    assert inversion_share(list(range(100))) == 0.0
    assert inversion_share(list(range(100, 0, -1))) == 1.0
    shuffled = list(range(2000))
    random.Random(5).shuffle(shuffled)
    assert 0.45 < inversion_share(shuffled) < 0.55


RULE = IdleRule(timeout_ms=10_000, since_ms=1_000, drawn_ms=50_000, entrants=2)


def test_seen_counts_the_join_the_timeout_switch_and_for_the_prequeue_the_draw() -> None:
    assert RULE.seen_ms(_user(1, queued_ms=2_000)) == 50_000  # pre-queue: the draw
    assert RULE.seen_ms(_user(3, queued_ms=60_000)) == 60_000  # later: the join
    assert RULE.seen_ms(_user(3, queued_ms=500)) == 1_000  # joined before the switch
    assert not RULE.admitted_late(_user(1, queued_ms=2_000, admitted_ms=60_000))
    assert RULE.admitted_late(_user(1, queued_ms=2_000, admitted_ms=60_001))
    assert not IdleRule(0).admitted_late(_user(3, admitted_ms=10**9))  # no timeout: no rule


def test_the_abandoning_users_are_each_counted_once() -> None:
    abandon = {"abandons": True, "queued_ms": 60_000}
    outcomes = [
        _user(3, status=CANCELLED, reason=ABANDONED, finished_ms=80_000, **abandon),
        _user(1, status=EXPIRED, admitted_ms=55_000, finished_ms=75_000, **abandon),  # drawn
        _user(4, status=EXPIRED, admitted_ms=65_000, finished_ms=75_000, **abandon),  # in time
        _user(5, status=EXPIRED, admitted_ms=90_000, finished_ms=99_000, **abandon),  # late
        _user(6, status=QUEUED, **abandon),  # unsettled
        _user(7, status=READY, admitted_ms=61_000, **abandon),  # in time, still in checkout
        _user(8, status=EXPIRED, reason="queue_expired", finished_ms=70_000, **abandon),
        _user(9, status=CANCELLED, reason=ABANDONED, finished_ms=80_000),  # present: a fault
        _user(10, status=CANCELLED, reason="user_left", finished_ms=80_000),  # left: fine
        _user(11, status=COMPLETED, admitted_ms=70_000, finished_ms=71_000),
    ]
    count = AbandonedCount.of(outcomes, RULE)
    assert count.to_json() == {
        "users": 7,
        "dropped": 1,
        "admitted": 4,
        "admitted_in_time": 3,
        "admitted_late": 1,
        "unsettled": 2,
        "other": 1,
        "present_dropped": 1,
        "admitted_prequeue": 1,
    }


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.booleans(),
            st.sampled_from([QUEUED, READY, COMPLETED, EXPIRED, CANCELLED, 0]),
            st.sampled_from(["", ABANDONED, "user_left", "queue_expired"]),
            st.integers(0, 100_000),
        ),
        max_size=40,
    )
)
def test_every_abandoning_user_ends_in_exactly_one_bucket(
    rows: list[tuple[bool, int, str, int]],
) -> None:
    outcomes = [
        _user(i + 1, abandons=a, status=s, reason=r, admitted_ms=adm, queued_ms=1)
        for i, (a, s, r, adm) in enumerate(rows)
    ]
    count = AbandonedCount.of(outcomes, RULE)
    settled_admitted = sum(
        1 for o in outcomes if o.abandons and o.admitted_ms and o.status in {5, 6, 7, 8}
    )
    assert count.users == sum(1 for o in outcomes if o.abandons)
    assert count.dropped + count.other + count.unsettled + settled_admitted == count.users
    assert count.admitted_in_time + count.admitted_late == count.admitted


def test_the_estimate_error_is_relative_to_the_real_wait() -> None:
    assert relative_error(12, 10) == pytest.approx(0.2)
    assert relative_error(8, 10) == pytest.approx(-0.2)
    assert relative_error(1, 0.2) == pytest.approx(0.8)  # under a second counts as one
    error = EstimateError.of([(12, 10.0), (8, 10.0), (10, 10.0), (30, 10.0), (10, 20.0)])
    # Errors: +0.2, -0.2, 0, +2.0, -0.5.
    assert error.count == 5
    assert error.median == pytest.approx(0.0)
    assert error.abs_p50 == pytest.approx(0.2)
    assert error.abs_p90 == pytest.approx(1.4)  # between 0.5 and 2.0 at rank 3.6
    assert EstimateError.of([]).to_json() == {
        "count": 0, "median": None, "abs_p50": None, "abs_p90": None,
    }  # fmt: skip


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 600), st.floats(1.0, 600.0)), min_size=1, max_size=50))
def test_exact_estimates_have_no_error_and_longer_ones_a_positive_bias(
    pairs: list[tuple[int, float]],
) -> None:
    exact = EstimateError.of([(w, w) for _, w in pairs])
    assert exact.abs_p90 == pytest.approx(0.0)
    longer = EstimateError.of([(w * 2, w) for _, w in pairs])
    assert longer.median == pytest.approx(1.0) and longer.abs_p50 == pytest.approx(1.0)


def test_estimates_are_paired_with_the_server_wait_of_admitted_users_only() -> None:
    outcomes = [
        _user(1, estimate_s=20, queued_ms=1_000, admitted_ms=19_000),
        _user(2, estimate_s=20, queued_ms=1_000),  # never admitted
        _user(3, estimate_s=None, queued_ms=1_000, admitted_ms=5_000),  # no estimate
        _user(4, estimate_s=3, queued_ms=30_000, admitted_ms=33_500),
    ]
    assert estimate_pairs(outcomes, entrants=2) == [(20, 18.0, True), (3, 3.5, False)]


@settings(max_examples=60, deadline=None)
@given(
    st.integers(0, 300),
    st.floats(0, 1),
    st.sampled_from(["burst", "ramp"]),
    st.floats(1, 60),
    st.floats(0.5, 500),
)
def test_arrivals_fall_before_and_after_the_opening_as_asked(
    users: int, share: float, arrival: str, opens_in: float, rate: float
) -> None:
    before = round(share * users)
    offsets = arrival_offsets(users, before, opens_in, arrival, rate)
    assert len(offsets) == users
    assert offsets == sorted(offsets)
    assert all(0 <= t < opens_in * BEFORE_SPAN or t == 0 for t in offsets[:before])
    assert all(t >= opens_in + AFTER_MARGIN_SECONDS for t in offsets[before:])
    if arrival == "burst":
        assert len(set(offsets[before:])) <= 1


def test_without_an_opening_arrivals_are_as_before() -> None:
    assert arrival_offsets(3, 0, None, "burst", 10) == [0.0, 0.0, 0.0]
    assert arrival_offsets(3, 0, None, "ramp", 10) == [0.0, 0.1, 0.2]


def _report(matches: bool) -> dict[str, object]:
    none = {"count": 0, "median": None, "abs_p50": None, "abs_p90": None}
    some = {"count": 10, "median": 0.05, "abs_p50": 0.12, "abs_p90": 0.3}
    return {
        "opening": {
            "opens_at": "2026-11-27T10:00:00Z", "opens_t": 20.0, "planned_before": 5,
            "drawn": True, "draw_delay_seconds": 0.05, "entrants": 5, "ours": 5,
            "permutation": True, "prequeue_overtaken": 0, "fifo_after_opening": 0,
            "out_of_join_order": 0.4,
            "verify": {"matches": matches, "problems": [] if matches else ["3 placed differently"]},
        },
        "abandoned": {
            "users": 2, "dropped": 1, "admitted": 1, "admitted_in_time": 1, "admitted_late": 0,
            "unsettled": 0, "other": 0, "present_dropped": 0, "idle_timeout_seconds": 10.0,
            "admitted_prequeue": 1,
        },
        "estimate_error": {"all": some, "prequeue": none, "after_opening": some},
    }  # fmt: skip


def test_the_sale_lines_say_what_was_checked() -> None:
    text = "\n".join(lines(_report(matches=True)))
    assert "draw verify: matches  ok" in text
    assert "dropped 1, admitted before their timeout ran out 1 (1 drawn early in" in text
    assert "after 0 ok" in text
    assert "median 12%  p90 30%  bias +5%  (n=10)" in text
    assert "no admitted user with an estimate" in text  # the empty pre-queue group
    assert "3 placed differently  FAIL" in "\n".join(lines(_report(matches=False)))
