"""The event service's answers as decisions: which state, which refusal (no servers)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from shared.errors import Code
from shared.events import EventState
from shared.proto import event_pb2
from waitroom_api.eventservice import RemoteEvent, date_ms, desired_state, opening, refusal

START, END = 1_000_000, 2_000_000
PUBLISHED, CANCELLED = event_pb2.EVENT_STATUS_PUBLISHED, event_pb2.EVENT_STATUS_CANCELLED


def remote(
    allowed: bool = True, status: int = PUBLISHED, start: int = START, end: int = END
) -> RemoteEvent:
    return RemoteEvent("e", allowed, status, start, end)


def test_the_state_follows_the_sale() -> None:
    assert desired_state(remote(), START - 1) is EventState.OPEN  # its pre-queue takes joins
    assert opening(remote(), START - 1) == START and opening(remote(), START) is None
    assert desired_state(remote(), START) is EventState.OPEN
    assert desired_state(remote(), END - 1) is EventState.OPEN
    assert desired_state(remote(), END) is EventState.CLOSED
    assert desired_state(remote(start=0, end=0), 5) is EventState.OPEN
    assert desired_state(remote(status=CANCELLED), START + 1) is EventState.CLOSED
    assert desired_state(remote(allowed=False), START + 1) is EventState.CLOSED


def test_refusals_name_the_reason() -> None:
    assert refusal(remote(), START) is None
    assert refusal(remote(), START - 1) is None  # configured paused: the queue fills early
    for answer, word in [
        (remote(allowed=False), "not allowed"),
        (remote(status=CANCELLED), "cancelled"),
    ]:
        refused = refusal(answer, START)
        assert refused is not None and refused.code is Code.EVENT_CLOSED and word in refused.text
    ended = refusal(remote(), END)
    assert ended is not None and ended.code is Code.EVENT_CLOSED


def test_the_record_of_an_answer_reads_back_the_same() -> None:
    answer = remote(status=CANCELLED)
    assert RemoteEvent.from_fields("e", answer.fields(123)) == answer


def test_dates_are_read_as_rfc_3339_and_junk_means_no_bound() -> None:
    assert date_ms("1970-01-01T00:00:01Z") == 1000
    assert date_ms("2026-11-26T17:41:39+07:00") == date_ms("2026-11-26T10:41:39Z")
    assert date_ms("") == 0
    assert date_ms("next tuesday") == 0


@given(st.text(max_size=60))
def test_any_date_text_from_the_service_is_read_without_raising(text: str) -> None:
    assert isinstance(date_ms(text), int)
