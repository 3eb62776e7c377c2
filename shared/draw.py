"""The draw of a scheduled opening: a shuffle anyone can recompute, and its commitment.

Scheme ``fisher-yates-sha256-v1`` (docs/architecture.md, "The draw"): the seed is 32 random
bytes; its commitment is ``SHA-256(seed)`` in hex, published when the opening is set. The
pre-queue's entrants are tickets 1..n in join order. The random stream is SHA-256 in counter
mode, ``SHA-256(seed || counter)`` with the counter as 8 bytes big-endian from 0, read as
consecutive 64-bit big-endian unsigned integers. ``uniform(k)`` takes the next integer ``u``,
rejects it while ``u >= 2**64 - 2**64 % k`` (so every result is equally likely), and returns
``u % k``. Fisher-Yates: ``a = [1..n]``; for ``i`` from ``n - 1`` down to 1, swap ``a[i]`` with
``a[uniform(i + 1)]``. Place ``p`` (1-based) then holds ticket ``a[p - 1]``.

Nothing here uses Python's ``random``: the result depends on the seed and n alone, in any
language that has SHA-256.
"""

from __future__ import annotations

import hashlib
import secrets
import sys
from array import array
from collections.abc import Iterator

SCHEME = "fisher-yates-sha256-v1"
SEED_BYTES = 32
_BLOCKS_PER_REFILL = 4096  # 128 KiB of stream per refill: hashing in bulk, not per draw
_TWO64 = 1 << 64


def new_seed() -> str:
    """A fresh seed, hex."""
    return secrets.token_bytes(SEED_BYTES).hex()


def commitment(seed_hex: str) -> str:
    """The published commitment to a seed: SHA-256 of its bytes, hex."""
    return hashlib.sha256(bytes.fromhex(seed_hex)).hexdigest()


def _stream(seed: bytes) -> Iterator[int]:
    """The 64-bit unsigned integers of SHA-256(seed || counter), counter from 0."""
    counter = 0
    while True:
        blocks = b"".join(
            hashlib.sha256(seed + (counter + j).to_bytes(8, "big")).digest()
            for j in range(_BLOCKS_PER_REFILL)
        )
        counter += _BLOCKS_PER_REFILL
        values = array("Q", blocks)
        if sys.byteorder == "little":
            values.byteswap()  # the scheme reads big-endian
        yield from values


def permutation(seed_hex: str, n: int) -> array[int]:
    """The tickets at places 1..n (index p - 1 holds the ticket at place p).

    0.3 s for a million entrants on this machine (``python -m bench draw`` measures it).
    """
    order = array("I", range(1, n + 1))
    stream = _stream(bytes.fromhex(seed_hex))
    for i in range(n - 1, 0, -1):
        k = i + 1
        limit = _TWO64 - _TWO64 % k
        u = next(stream)
        while u >= limit:  # probability k / 2**64: never in practice, but it keeps it exact
            u = next(stream)
        j = u % k
        order[i], order[j] = order[j], order[i]
    return order


def ranks(order: array[int]) -> array[int]:
    """The inverse: index t - 1 holds the place of ticket t."""
    rank = array("I", bytes(4 * len(order)))
    for index, ticket in enumerate(order):
        rank[ticket - 1] = index + 1
    return rank


def pack(values: array[int]) -> bytes:
    """4-byte big-endian integers, as the draw's Redis strings hold them."""
    out = array("I", values)
    if sys.byteorder == "little":
        out.byteswap()
    return out.tobytes()


def unpack(raw: bytes) -> array[int]:
    values = array("I", raw[: len(raw) - len(raw) % 4])
    if sys.byteorder == "little":
        values.byteswap()
    return values


def entrant_ticket(session_id: str) -> int:
    """The ticket a session id names (``<nonce>.<ticket>.<event>``); 0 if it names none."""
    parts = session_id.split(".")
    if len(parts) != 3 or not parts[1].isascii() or not parts[1].isdigit():
        return 0
    return int(parts[1])


def list_problems(sessions: list[str]) -> list[str]:
    """What is wrong with a public entrant list: it must name tickets 1..n, in order, once."""
    problems = []
    for index, session_id in enumerate(sessions):
        if entrant_ticket(session_id) != index + 1:
            problems.append(f"entry {index + 1} ({session_id[:60]!r}) is not ticket {index + 1}")
            if len(problems) >= 10:
                break
    return problems
