"""The label-feature thread looks at the store less and less often while no worker waits on it."""

from __future__ import annotations

from flows.label_features import LabelFeatures
from flows.store_changes import Change, Progress
from streamguard.core.settings import Settings


class _Store:
    """A change feed whose store stands still, or moves (one change and more progress per look)."""

    resumes = True
    after = 0

    def __init__(self, moving: bool = False) -> None:
        self.moving, self.looks = moving, 0

    def initial(self) -> list[Change]:
        return []

    def poll(self) -> tuple[list[Change], list[Progress]]:
        self.looks += 1
        changes = [Change("T1", 20_000, None, 1, 0)] if self.moving else []
        return changes, [Progress("transactions", 0, 10 + (self.looks if self.moving else 0), None)]

    def close(self) -> None:
        pass


class _Waits:
    """Stands in for the thread's wake event: records each wait instead of sleeping; stops after `n`."""

    def __init__(self, labels: LabelFeatures, n: int, during=None) -> None:
        self.labels, self.n, self.during, self.seen = labels, n, during, []

    def wait(self, seconds: float) -> bool:
        self.seen.append(round(seconds, 3))
        if self.during is not None:
            self.during()
        if len(self.seen) >= self.n:
            self.labels._stop.set()  # noqa: SLF001
        return False

    def is_set(self) -> bool:
        return False

    def clear(self) -> None:
        pass

    def set(self) -> None:
        pass


def _waits(moving: bool = False, waiting: bool = False) -> list[float]:
    labels = LabelFeatures(Settings(_env_file=None, store_poll_ms=50), feed=_Store(moving))
    labels._advance = lambda progress, fresh=False: None  # noqa: SLF001 - readiness is not under test
    waits = _Waits(labels, 8, labels.note_waiting if waiting else None)
    labels._wake = waits  # noqa: SLF001
    if waiting:
        labels.note_waiting()
    labels._run()  # noqa: SLF001 - in this thread, until the waits stop it
    return waits.seen


def test_with_no_worker_waiting_the_store_is_looked_at_less_often_up_to_once_a_second():
    assert _waits() == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0, 1.0]
    assert _waits(moving=True) == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0, 1.0]  # changes alone do not need it


def test_a_waiting_worker_keeps_the_configured_poll():
    assert _waits(waiting=True) == [0.05] * 8
    assert _waits(moving=True, waiting=True) == [0.05] * 8
