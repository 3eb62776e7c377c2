"""``python -m waitroom_admitter``: the same as ``waitroom admitter``."""

from waitroom_admitter.cli import admitter

admitter(prog_name="waitroom admitter")
