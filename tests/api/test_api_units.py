"""Pure pieces of the API: URL templates, user agent and IP checks, a session's visible state."""

from __future__ import annotations

import asyncio

import pytest

from shared.errors import WaitroomError
from shared.scripts import SessionView
from shared.sessions import SessionRecord, Status
from shared.settings import ApiSettings, load
from waitroom_api.errors import MAX_USER_AGENT_LENGTH, validate_ip, validate_user_agent
from waitroom_api.render import Renderer, fill_url, session_state
from waitroom_api.stream import Reading, Stream


def record(status: Status, expires_ms: int = 10_000) -> SessionRecord:
    return SessionRecord(status, "u1", 7, 1_000, expires_ms, 0, 0, 0, "")


def test_urls_are_filled_and_escaped() -> None:
    template = "https://x.test/{event_id}/c?s={session_id}&keep={other}"
    assert fill_url(template, "a b/c", "s.1") == "https://x.test/a%20b%2Fc/c?s=s.1&keep={other}"
    assert fill_url("", "e", "s") == ""


def test_the_default_urls_are_the_old_services() -> None:
    api = load(ApiSettings, {})
    renderer = Renderer("s" * 32, api.checkout_url, api.websocket_url)
    assert renderer.websocket("concert 1", "n.1.x") == "/api/v1/waitroom/stream/n.1.x"
    assert fill_url(api.checkout_url, "concert 1", "n.1.x") == "/checkout"


@pytest.mark.parametrize("value", ["", "Mozilla/5.0 (X11; Linux)", "é" * 1024])
def test_a_user_agent_within_limits_is_kept_whole(value: str) -> None:
    assert validate_user_agent(value) == value


def test_a_long_user_agent_is_cut_not_refused() -> None:
    assert validate_user_agent("a" * 5000) == "a" * MAX_USER_AGENT_LENGTH
    # What lies past the cut is dropped unread, control characters included.
    assert validate_user_agent("a" * MAX_USER_AGENT_LENGTH + "\n") == "a" * MAX_USER_AGENT_LENGTH


@pytest.mark.parametrize("value", ["tab\there", "del\x7f", "nul\x00", "rtl\u202e", "zw\u200b"])
def test_a_user_agent_with_hidden_characters_is_refused(value: str) -> None:
    with pytest.raises(WaitroomError, match="WTR007 - user_agent contains"):
        validate_user_agent(value)


@pytest.mark.parametrize(
    ("value", "canonical"),
    [
        ("", ""),
        ("203.0.113.9", "203.0.113.9"),
        ("2001:DB8:0:0:0:0:0:7", "2001:db8::7"),
        ("::1", "::1"),
        ("::ffff:203.0.113.9", "::ffff:cb00:7109"),
    ],
)
def test_ip_addresses_of_both_families_are_accepted(value: str, canonical: str) -> None:
    assert validate_ip(value) == canonical


@pytest.mark.parametrize(
    "value", ["1.2.3", "01.2.3.4", "1.2.3.4 ", "2001:db8::g", "fe80::1%eth0", "x" * 5000]
)
def test_anything_else_as_ip_address_is_refused(value: str) -> None:
    with pytest.raises(WaitroomError, match=r"WTR007 - ip_address .* is not an IPv4 or IPv6"):
        validate_ip(value)


def test_a_queued_session_past_its_lifetime_shows_as_expired() -> None:
    view = SessionView("s", record(Status.QUEUED, expires_ms=5_000), rank=2)
    assert session_state("e", view, 9, now_ms=4_999).key == (Status.QUEUED, 3)
    assert session_state("e", view, 9, now_ms=5_000).key == (Status.EXPIRED, 0)


def test_admitted_and_finished_sessions_have_no_position() -> None:
    for status in (Status.READY, Status.COMPLETED, Status.CANCELLED):
        view = SessionView("s", record(status, expires_ms=0), rank=-1)
        assert session_state("e", view, 4, now_ms=1).key == (status, 0)


def test_an_unknown_session_is_wtr001() -> None:
    with pytest.raises(WaitroomError, match="WTR001"):
        session_state("e", SessionView("s", None, -1), 0, now_ms=1)


def test_a_stream_sends_changes_only_drops_older_reads_and_ends_when_terminal() -> None:
    async def scenario() -> list[tuple[int, int]]:
        stream = Stream("e", "s", Renderer("k" * 32, "", ""))
        queued = record(Status.QUEUED)
        stream.offer(SessionView("s", queued, rank=4), Reading(9, now_ms=2_000), read_at=20)
        stream.offer(SessionView("s", queued, rank=9), Reading(9, now_ms=1_000), 10)  # older
        updates = stream.updates()
        sent = [await anext(updates)]
        stream.offer(SessionView("s", queued, rank=4), Reading(8, now_ms=2_100), 30)  # same
        stream.offer(SessionView("s", queued, rank=3), Reading(8, now_ms=2_200), 40)
        sent.append(await anext(updates))
        stream.offer(SessionView("s", record(Status.CANCELLED), rank=-1), Reading(7, 2_300), 50)
        sent += [u async for u in updates]
        return [(u.status, u.position) for u in sent]

    assert asyncio.run(scenario()) == [(1, 5), (1, 4), (8, 0)]
