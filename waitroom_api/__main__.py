"""``python -m waitroom_api``: the same as ``waitroom api``."""

from waitroom_api.cli import api

if __name__ == "__main__":
    api(prog_name="waitroom api")
