"""The waitroom on a developer's machine: local servers, the dev stack and the sale rehearsal.

- ``services``: a real Redis and a real Kafka-protocol broker on local ports (used by the tests,
  the benchmarks and the dev stack).
- ``stack/``: ``waitroom dev up|status|down``, the whole system under supervisord.
- ``simulate/``: ``waitroom simulate``, a sale rehearsal against a running waitroom.
- ``cli``: the ``dev`` and ``simulate`` commands, as the ``waitroom`` group imports them.
"""
