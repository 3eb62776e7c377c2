"""``python -m bench.join_latency [--quick] RATE [RATE ...]``: JoinQueue latency at fixed rates.

The join benchmark's latency row is taken at 80% of the rate the process just sustained, so two
trees with different saturation points are measured at different rates. This measures each
given rate on a fresh stack (one API process, Redis, broker) instead, so an A/B of two trees
(``PYTHONPATH`` picks the tree) compares like with like.
"""

from __future__ import annotations

import sys

from bench.join import _api, _steady
from bench.procs import stack
from bench.runner import Options


def main(argv: list[str]) -> int:
    quick = "--quick" in argv  # 3 s per rate instead of 8: a smoke check
    rates = [a for a in argv if a != "--quick"]
    if not rates:
        print(__doc__.splitlines()[0], file=sys.stderr)
        return 2
    opts = Options(quick=quick, verbose=False)
    for at in (float(rate) for rate in rates):
        with stack() as st:
            port, pids = _api(st, 1)
            steady, _ = _steady(opts, st, port, pids, at, opts.seconds(8.0, 3.0))
            print(
                f"{at:,.0f}/s offered: {steady.rate:,.0f}/s achieved, "
                f"p50 {steady.percentile(50):.1f} ms, p99 {steady.percentile(99):.1f} ms, "
                f"errors {steady.errors}",
                flush=True,
            )
            st.stop_procs()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
