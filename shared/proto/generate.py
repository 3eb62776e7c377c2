"""Regenerate the gRPC code and type stubs from ``waitroom.proto`` and ``event.proto``.

Run from anywhere: ``python -m shared.proto.generate`` (``--check`` only compares, for CI).
"""

from __future__ import annotations

import filecmp
import sys
import tempfile
from pathlib import Path

PROTO_DIR = Path(__file__).resolve().parent
ROOT = PROTO_DIR.parent.parent
#: Our contract, and the subset of TicketBottle's EventService the API calls.
PROTOS = (PROTO_DIR / "waitroom.proto", PROTO_DIR / "event.proto")
OUTPUTS = tuple(
    f"{proto.stem}{suffix}"
    for proto in PROTOS
    for suffix in ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")
)


def generate(out_root: Path) -> None:
    """Run protoc into ``out_root``, which mirrors the repository root."""
    from grpc_tools import protoc  # type: ignore[import-untyped]  # build-time tool only

    args = [
        "protoc",
        f"-I{ROOT}",
        f"--python_out={out_root}",
        f"--mypy_out={out_root}",
        f"--grpc_python_out={out_root}",
        f"--mypy_grpc_out={out_root}",
        *(str(proto.relative_to(ROOT)) for proto in PROTOS),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")


def stale_files() -> list[str]:
    """Names of generated files that differ from what the proto produces now."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        generate(out)
        fresh = out / PROTO_DIR.relative_to(ROOT)
        return [
            name
            for name in OUTPUTS
            if not (PROTO_DIR / name).exists()
            or not filecmp.cmp(fresh / name, PROTO_DIR / name, shallow=False)
        ]


def main() -> None:
    if "--check" in sys.argv[1:]:
        stale = stale_files()
        if stale:
            names = ", ".join(stale)
            raise SystemExit(f"stale generated code: {names}; run python -m shared.proto.generate")
        print("generated code is up to date")
        return
    generate(ROOT)
    print(f"regenerated {', '.join(OUTPUTS)} in {PROTO_DIR}")


if __name__ == "__main__":
    main()
