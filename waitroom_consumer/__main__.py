"""``python -m waitroom_consumer``: the same as ``waitroom consumer``."""

from waitroom_consumer.cli import consumer

consumer(prog_name="waitroom consumer")
