"""The arming history: which state was in force when, so that an event is judged by the arming state at the
moment it was detected, not at the moment it reached the notifier (docs/notifier.md, "Arming")."""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable


class ArmingHistory:
    """Arming changes, oldest first: (when it took effect, armed). The outbox keeps them; this is its copy
    for the event handler, replaced whenever a change is stored."""

    def __init__(self, changes: Iterable[tuple[float, bool]] = ()) -> None:
        ordered = list(changes)
        self._times = [at for at, _armed in ordered]
        self._states = [armed for _at, armed in ordered]

    def __len__(self) -> int:
        return len(self._times)

    @property
    def latest_at(self) -> float:
        """When the latest change took effect; 0 when there is none."""
        return self._times[-1] if self._times else 0.0

    def state_at(self, moment: float) -> bool | None:
        """The state in force at ``moment``: that of the latest change at or before it. Before the first
        change kept, the first one's (the first state the notifier learned counts from before it; older
        changes are pruned only while a later one before the pruning horizon remains). None when no state is
        known at all (a new data directory before the first state arrived)."""
        if not self._times:
            return None
        index = bisect_right(self._times, moment)
        return self._states[max(index - 1, 0)]
