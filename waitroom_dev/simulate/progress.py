"""The rehearsal's live progress: what one line shows, and how it reaches the terminal."""

from __future__ import annotations

from dataclasses import dataclass

import click


@dataclass(frozen=True)
class Progress:
    """A live view of the run for the terminal."""

    elapsed: float
    users: int
    joined: int
    queued: int
    in_checkout: int
    cap: int
    done: int
    join_rate: float
    admit_rate: float

    def line(self) -> str:
        return (
            f"{self.elapsed:6.1f}s  joined {self.joined}/{self.users}  queued {self.queued}  "
            f"in checkout {self.in_checkout}/{self.cap}  done {self.done}  "
            f"join {self.join_rate:.0f}/s  admit {self.admit_rate:.0f}/s"
        )


class LiveProgress:
    """Live progress on stderr: one updating line on a terminal, else a line every 5 s."""

    def __init__(self, live: bool) -> None:
        self.live = live
        self.shown = False

    @property
    def every(self) -> float:
        return 0.5 if self.live else 5.0

    def __call__(self, progress: Progress) -> None:
        if self.live:
            click.echo("\r\x1b[K" + progress.line(), nl=False, err=True)
            self.shown = True
        else:
            click.echo(progress.line(), err=True)

    def end(self) -> None:
        if self.shown:
            click.echo("", err=True)
