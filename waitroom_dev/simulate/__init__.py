"""``waitroom simulate``: a sale rehearsal against a running waitroom.

- ``run``: the orchestration (``Simulation``): arrivals, sampling Redis, reading records back.
- ``model``: what a run is asked for and what it gathered.
- ``progress``: the live progress line, and why admissions paused.
- ``users``: the crowd of simulated users, polling or streaming their status.
- ``checkout``: the stand-in for the order service, answering ``queue.ready``.
- ``invariants``: the pure checks: FIFO order, peak concurrency, percentiles.
- ``report``: the report built from a run, and its text for a person.
- ``plot``: the report's time series drawn into a PNG.
- ``cli``: the ``simulate`` command.
"""
