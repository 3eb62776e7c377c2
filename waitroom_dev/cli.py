"""The two commands this package adds to ``waitroom``: ``dev`` (the stack) and ``simulate``.

``waitroom_cli.main`` imports both from here, so the packages behind them can move freely.
"""

from __future__ import annotations

from waitroom_dev.simulate.cli import simulate
from waitroom_dev.stack.cli import dev

__all__ = ["dev", "simulate"]
