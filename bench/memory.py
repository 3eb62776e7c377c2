"""Memory per waiting user: Redis ``used_memory`` before and after a million joins.

The outbox (the ``queue.joined`` records awaiting relay) is measured apart and then deleted,
as the admitter's relay would: it is transient, while a session record and the user index
field stay for as long as the user waits. The baseline is the bytes of data a waiting user
really needs (the record's JSON, the user id and the ticket, twice), so the ratio is Redis's
overhead over the raw data.
"""

from __future__ import annotations

import asyncio
import json

from redis import Redis

from bench.fill import create_event, fill, paused_event
from bench.procs import stack
from bench.report import Row
from bench.runner import Options, used_memory
from shared import keys
from shared.ids import ticket_of_session

TARGET_BYTES = 250


def _payload_bytes(redis_url: str, event_id: str, session_ids: list[str]) -> float:
    """Average data of the sampled users: the record and its ticket (the sessions hash), the
    user id and the ticket (the users index)."""
    client = Redis.from_url(redis_url)
    try:
        total = 0
        for sid in session_ids:
            ticket = str(ticket_of_session(sid))
            raw = client.hget(keys.sessions(event_id), ticket)
            assert isinstance(raw, bytes), f"no record for {sid}"
            user_id = str(json.loads(raw)[1])
            total += len(raw) + len(ticket) + len(user_id.encode()) + len(ticket)
        return total / len(session_ids)
    finally:
        client.close()


def run(opts: Options) -> list[Row]:
    users = opts.size(1_000_000, 50_000, minimum=100)
    with stack(opts.workdir) as st:
        # A warm-up event loads the scripts and the allocator's first arenas outside the window.
        asyncio.run(create_event(st.redis_url, paused_event("warmup")))
        fill(st.redis_url, "warmup", 1000, processes=1)
        asyncio.run(create_event(st.redis_url, paused_event("memory")))
        before = used_memory(st.redis_url)
        opts.say(f"memory: joining {users:,} users")
        filled = fill(st.redis_url, "memory", users, sample_every=max(1, users // 1000))
        with_outbox = used_memory(st.redis_url)
        client = Redis.from_url(st.redis_url)
        try:
            client.delete(keys.outbox("memory"))
            users_index = int(client.memory_usage(keys.users("memory"), samples=0) or 0)
            sessions = int(client.memory_usage(keys.sessions("memory"), samples=0) or 0)
        finally:
            client.close()
        after = used_memory(st.redis_url)
        payload = _payload_bytes(st.redis_url, "memory", filled.sampled)
    per_user = (after - before) / filled.joined
    return [
        Row(
            bench="memory",
            name=f"Redis bytes per waiting user ({filled.joined:,} queued)",
            figure=per_user,
            unit="B",
            baseline=payload,
            baseline_name="raw data per user",
            target=f"<= {TARGET_BYTES} B",
            met=per_user <= TARGET_BYTES,
            client_cpu=filled.cpu / filled.seconds if filled.seconds else None,
            notes={
                "outbox_bytes_per_join": (with_outbox - after) / filled.joined,
                "sessions_hash_per_user": sessions / filled.joined,
                "users_hash_per_user": users_index / filled.joined,
                "fill_joins_per_s": filled.joined / filled.seconds,
                "refused": filled.refused,
            },
        )
    ]
