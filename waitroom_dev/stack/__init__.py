"""``waitroom dev``: the whole waitroom on one machine.

- ``options``: what ``dev up`` was asked for, and the ports and settings it runs with.
- ``programs``: the API, admitters and consumer as supervisord runs them.
- ``up``: ``DevStack``, which starts Redis, the broker and supervisord, watches and stops them.
- ``down``: stopping a stack (or its leftovers) from another process.
- ``supervise``: the supervisord config and its XML-RPC client.
- ``state``: the state file another terminal reads, and the pid checks.
- ``status``: ``dev status``'s liveness report.
- ``cli``: the ``dev up|status|down`` commands.
"""
