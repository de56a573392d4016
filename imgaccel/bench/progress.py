"""Progress lines on stderr; on a terminal, pull counts update in place."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import TextIO


@dataclass
class Progress:
    stream: TextIO = field(default_factory=lambda: sys.stderr)
    quiet: bool = False
    _started: float = field(default_factory=time.monotonic)
    _inline: bool = False

    @property
    def interactive(self) -> bool:
        return self.stream.isatty()

    def __call__(self, message: str) -> None:
        """A line that stays."""
        if self.quiet:
            return
        self._end_inline()
        self.stream.write(f"[{time.monotonic() - self._started:6.1f}s] {message}\n")
        self.stream.flush()

    def pulls(self, done: int, total: int, label: str) -> None:
        """How many of ``total`` simultaneous pulls finished (in place on a terminal)."""
        if self.quiet or not self.interactive:
            return
        self.stream.write(f"\r  {label}: {done}/{total} nodes done")
        self.stream.flush()
        self._inline = True

    def _end_inline(self) -> None:
        if self._inline:
            self.stream.write("\n")
            self._inline = False
