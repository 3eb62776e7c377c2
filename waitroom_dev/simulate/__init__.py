"""``waitroom simulate``: a sale rehearsal against a running waitroom.

- ``run``: the orchestration (``Simulation``): arrivals, sampling Redis, reading records back.
- ``model``: what a run is asked for and what it gathered.
- ``progress``: the live progress line, and why admissions paused.
- ``users``: the crowd of simulated users, polling or streaming their status.
- ``checkout``: the stand-in for the order service, answering ``queue.ready``.
- ``opening``: a scheduled opening: setting it, arrivals around it, reading and verifying the draw.
- ``invariants``: the pure checks: FIFO order, peak concurrency, percentiles.
- ``fairness``: the pure sale-day checks: places after a draw, abandoning users, estimate error.
- ``report``: the report built from a run, and its text for a person.
- ``sale_report``: the report's sale-day part (opening, draw, abandoned, estimate error).
- ``plot``: the report's time series drawn into a PNG, and estimated against real waits.
- ``cli``: the ``simulate`` command.
"""
