"""Stop strings matched on the decoded text, across token boundaries.

Text that could be the start of a stop string is held back until the next text shows it is not; a
matched stop string and anything after it are never emitted.
"""

from __future__ import annotations


class StopMatcher:
    """Feeds text through, holding back possible stop-string prefixes."""

    def __init__(self, stops: tuple[str, ...] | list[str]) -> None:
        self._stops = tuple(s for s in stops if s)
        self._pending = ""

    def feed(self, text: str, final: bool = False) -> tuple[str, str | None]:
        """Return (text safe to emit, the stop string matched or None).

        With `final`, nothing is held back (the stream ends here).
        """
        if not self._stops:
            return text, None
        pending = self._pending + text
        # The stop string completed first wins (as if the text had arrived one character at a time);
        # of two completed at the same character, the one that started earlier.
        best: tuple[int, int, str] | None = None
        for stop in self._stops:
            index = pending.find(stop)
            if index >= 0:
                candidate = (index + len(stop), index, stop)
                best = candidate if best is None else min(best, candidate)
        if best is not None:
            self._pending = ""
            return pending[: best[1]], best[2]
        hold = 0 if final else self._held_suffix(pending)
        self._pending = pending[len(pending) - hold :] if hold else ""
        return pending[: len(pending) - hold], None

    def _held_suffix(self, text: str) -> int:
        """Length of the longest suffix of text that is a proper prefix of some stop string."""
        longest = 0
        for stop in self._stops:
            for size in range(min(len(stop) - 1, len(text)), longest, -1):
                if text.endswith(stop[:size]):
                    longest = size
                    break
        return longest
