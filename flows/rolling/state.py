"""Keep exact event-time rolling aggregates for many keys in compact arrays: one shard's state.

Semantics, for an accepted event of key `k` at time `t` and a window of length `L`:

- the window covers `(t - L, t]` and includes the event itself; other events of `k` at exactly `t` count
  if they were processed before it (pandas `rolling("1D", closed="right")` on a time-sorted index);
- it covers exactly the events of `k` received so far with times in that range, whatever order they
  arrived in: an out-of-order event is inserted at its sorted place. Events that arrive later do not
  revise results already emitted;
- `secs_since_prev` is the time since the key's latest event at or before `t` (0.0 for a tie), or None
  when the longest window holds no other event of the key (its first event, or the first after a gap of
  at least the longest window). Capping at the longest window is what lets idle keys be dropped.

Late data. Let `lateness` be the allowed lateness and `Lmax` the longest window. An event is rejected,
with a reason, and never folded in, when

1. `t < newest(k) - lateness`: older than its key's watermark (per key, so a quiet card is never held
   back by other keys and a lagging Kafka partition does not make other partitions' cards late), or
2. `t < shard_max - lateness - Lmax`: older than the shard's horizon. Events that old could only see
   keys that may already have been dropped; rejecting them is what keeps acceptance independent of
   when idle keys are swept.

No event is ever held back: each accepted event's result is computed as it arrives.

Memory. A key keeps only events newer than `max(newest(k) - lateness, shard_max - lateness - Lmax) - Lmax`,
in a ring of int64 times and float64 values (16 bytes per event, rings sized to powers of two) inside
one arena per shard; a key whose events are all older than the horizon minus `Lmax` is dropped.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta, timezone

import numpy as np

from flows.rolling import kernel as K
from flows.rolling.batch import RollingBatch, RollingResult

SNAPSHOT_VERSION = 1


def to_us(d: timedelta) -> int:
    """Return a duration in whole microseconds."""
    return d // timedelta(microseconds=1)


def _fmt_us(us: int) -> str:
    return f"{datetime.fromtimestamp(0, timezone.utc) + timedelta(microseconds=us):%Y-%m-%dT%H:%M:%S.%fZ} ({us} us)"


class RollingState:
    """One shard's rolling state: keys to rings of (time, value) events, folded in batches.

    Not thread-safe; Bytewax gives each shard to one worker. `windows` must be positive and distinct.
    """

    def __init__(self, windows: Sequence[timedelta], allowed_lateness: timedelta = timedelta(0)) -> None:
        win = [to_us(w) for w in windows]
        if not win or min(win) <= 0 or len(set(win)) != len(win):
            raise ValueError(f"windows must be distinct and positive, got {list(windows)}")
        self.lateness_us = to_us(allowed_lateness)
        if self.lateness_us < 0:
            raise ValueError(f"allowed_lateness must not be negative, got {allowed_lateness}")
        self.windows_us = tuple(win)
        order = sorted(range(len(win)), key=win.__getitem__)
        self._n_win = len(win)
        self._lmax = max(win)
        self._config = np.array([self.lateness_us, len(win), *(win[i] for i in order), *order], np.int64)
        self._slot_of: dict[str, int] = {}
        self._key_of: list[str | None] = []
        self._free: list[int] = []
        self._meta = np.zeros((0, 4), np.int64)
        self._ts = np.zeros(1024, np.int64)
        self._val = np.zeros(1024, np.float64)
        self._scalars = np.array([0, K.NO_TS], np.int64)
        self._marks = np.zeros((3, 1024), np.int64)
        """Kernel scratch: late events' indices, reasons and watermarks."""
        self._since_sweep = 0
        self.accepted = 0
        """Events folded in since this state was built (not restored from a snapshot)."""
        self.late = 0
        """Events rejected as late since this state was built."""
        self.last_late = 0
        """Events the latest `process` call rejected."""

    # -- folding ------------------------------------------------------------------------------------------

    @property
    def key_count(self) -> int:
        """Keys currently held."""
        return len(self._slot_of)

    @property
    def shard_max_us(self) -> int | None:
        """Largest event time accepted by this shard, or None before any."""
        m = int(self._scalars[K.SHARD_MAX])
        return None if m == K.NO_TS else m

    def process(
        self, keys: Sequence[str], times_us: Sequence[int], values: Sequence[float]
    ) -> list[RollingResult | str]:
        """Fold events in, in the given order; return per event its result, or the reason it was late.

        A `str` entry means that event was rejected and not folded in. Builds a Python object per event;
        `process_columns` is the fast path.
        """
        batch, late = self.process_columns(keys, times_us, values)
        results: list[RollingResult | str] = batch.results()
        for i, reason in late:
            results[i] = reason
        return results

    def process_columns(
        self, keys: Sequence[str], times_us: Sequence[int] | np.ndarray, values: Sequence[float] | np.ndarray
    ) -> tuple[RollingBatch[int], list[tuple[int, str]]]:
        """Fold events in, in the given order; return every event's aggregates as columns, and the late.

        The batch's items are the events' indices in the input; its columns hold all events, late ones
        included, whose columns are meaningless. The list names each late event's index and reason.
        """
        n = len(keys)
        counts = np.empty((self._n_win, n), np.int64)
        floats = np.empty((3 * self._n_win + 1, n), np.float64)
        n_late = self._fold(keys, times_us, values, counts, floats)
        late: list[tuple[int, str]] = []
        if n_late:
            for i, status, wm in zip(*self._marks[:, :n_late].tolist(), strict=True):
                late.append((i, self._late_reason(status, int(times_us[i]), wm)))
        self._maybe_sweep(n)
        return RollingBatch(range(n), counts, floats), late

    def fold(self, keys: Sequence[str], times_us: Sequence[int], values: Sequence[float]) -> int:
        """Fold events in like `process` without keeping results (e.g. to warm up from history).

        Returns how many were rejected as late.
        """
        n_late = 0
        step = 8192  # bounds the throwaway output buffers
        for lo in range(0, len(keys), step):
            hi = min(lo + step, len(keys))
            counts = np.empty((self._n_win, hi - lo), np.int64)
            floats = np.empty((3 * self._n_win + 1, hi - lo), np.float64)
            n_late += self._fold(keys[lo:hi], times_us[lo:hi], values[lo:hi], counts, floats)
            self._maybe_sweep(hi - lo)
        self.last_late = n_late
        return n_late

    def _fold(
        self,
        keys: Sequence[str],
        times_us: Sequence[int] | np.ndarray,
        values: Sequence[float] | np.ndarray,
        counts: np.ndarray,
        floats: np.ndarray,
    ) -> int:
        """Run the kernel over a batch, writing results to `counts`, `floats` and the late to `_marks`.

        Returns how many were late.
        """
        n = len(keys)
        if n == 0:
            self.last_late = 0
            return 0
        slots = list(map(self._slot_of.get, keys))
        if None in slots:
            self._add_keys(keys, slots)
        if self._marks.shape[1] < n:
            self._marks = np.zeros((3, max(n, 2 * self._marks.shape[1])), np.int64)
        marks = self._marks
        slot_times = np.empty((2, n), np.int64)
        slot_times[0] = slots
        slot_times[1] = times_us
        vals = np.asarray(values, np.float64)
        stop, n_late = K.fold_batch(
            self._ts, self._val, self._meta, self._scalars, self._config,
            slot_times, vals, 0, 0, counts, floats, marks,
        )  # fmt: skip
        while stop < n:  # the arena was full: make room, go on from there
            self._make_room(2 * int(self._meta[slots[stop], K.CAP]) or K.MIN_CAP)
            stop, n_late = K.fold_batch(
                self._ts, self._val, self._meta, self._scalars, self._config,
                slot_times, vals, stop, n_late, counts, floats, marks,
            )  # fmt: skip
        self.accepted += n - n_late
        self.late += n_late
        self.last_late = n_late
        return n_late

    def _maybe_sweep(self, n: int) -> None:
        # Amortised: a sweep costs O(keys) compiled work, so run one per `keys / 2` events at most.
        self._since_sweep += n
        if self._since_sweep >= max(4096, len(self._slot_of) // 2):
            self.sweep()

    def _late_reason(self, status: int, t: int, wm: int) -> str:
        late = timedelta(microseconds=self.lateness_us)
        if status == K.LATE_KEY:
            return (
                f"event time {_fmt_us(t)} is older than its key's watermark {_fmt_us(wm)}: the key's "
                f"latest event time minus allowed lateness {late}"
            )
        return (
            f"event time {_fmt_us(t)} is older than the shard's horizon {_fmt_us(wm)}: the shard's "
            f"latest event time minus allowed lateness {late} minus the longest window "
            f"{timedelta(microseconds=self._lmax)}"
        )

    def _add_keys(self, keys: Sequence[str], slots: list[int | None]) -> None:
        """Fill in the slots of keys not seen before (`None` in `slots`), giving each key one slot.

        A reused slot still reads size -1 (free) in the slot table; the kernel takes that as fresh.
        """
        slot_of, key_of, free = self._slot_of, self._key_of, self._free
        for i, s in enumerate(slots):
            if s is None:
                key = keys[i]
                s = slot_of.get(key)
                if s is None:
                    if free:
                        s = free.pop()
                        key_of[s] = key
                    else:
                        s = len(key_of)
                        key_of.append(key)
                    slot_of[key] = s
                slots[i] = s
        if len(key_of) > self._meta.shape[0]:
            grown = np.zeros((max(64, 2 * self._meta.shape[0], len(key_of)), 4), np.int64)
            grown[: self._meta.shape[0]] = self._meta
            self._meta = grown

    # -- memory ---------------------------------------------------------------------------------------------

    def sweep(self) -> int:
        """Evict expired events of every key and drop idle keys; return how many keys were dropped.

        Runs on its own every so often (amortised over events); call it directly to force one.
        """
        self._since_sweep = 0
        idle = K.evict_and_find_idle(
            self._ts, self._meta, len(self._key_of), self._scalars[K.SHARD_MAX], self.lateness_us, self._lmax
        )
        for s in idle.tolist():
            key = self._key_of[s]
            if key is not None:
                del self._slot_of[key]
                self._key_of[s] = None
                self._free.append(s)
        live = K.packed_capacity(self._meta, len(self._key_of))
        if self._ts.shape[0] > 1024 and live < self._ts.shape[0] // 4:
            self._make_room(0)
        return len(idle)

    def _make_room(self, needed: int) -> None:
        """Defragment the arena into one sized for the live rings plus growth room and `needed`."""
        live = K.packed_capacity(self._meta, len(self._key_of))
        size = max(1024, live + live // 2 + needed)
        new_ts = np.zeros(size, np.int64)
        new_val = np.zeros(size, np.float64)
        self._scalars[K.TOP] = K.defragment(
            self._ts, self._val, self._meta, len(self._key_of), new_ts, new_val
        )
        self._ts, self._val = new_ts, new_val

    def retained_events(self) -> int:
        """Return how many events are held across all keys."""
        sizes = self._meta[: len(self._key_of), K.SIZE]
        return int(sizes[sizes > 0].sum())

    def nbytes(self) -> int:
        """Return the bytes of this state's arrays (arena and slot table; not the key dict)."""
        arrays = (self._ts, self._val, self._meta)
        return sum(a.nbytes for a in arrays)

    # -- recovery -------------------------------------------------------------------------------------------

    def snapshot(self) -> dict:
        """Return a picklable copy of the state: keys, per-key sizes and the events as flat arrays."""
        n = len(self._key_of)
        sizes = self._meta[:n, K.SIZE]
        slots = np.flatnonzero(sizes > 0)
        live_sizes = sizes[slots]
        total = int(live_sizes.sum())
        ts = np.empty(total, np.int64)
        vals = np.empty(total, np.float64)
        K.gather(self._ts, self._val, self._meta, slots, live_sizes, ts, vals)
        key_of = self._key_of
        return {
            "version": SNAPSHOT_VERSION,
            "windows_us": self.windows_us,
            "lateness_us": self.lateness_us,
            "shard_max_us": int(self._scalars[K.SHARD_MAX]),
            "keys": [key_of[s] for s in slots.tolist()],
            "sizes": live_sizes.astype(np.int32),
            "ts_us": ts,
            "values": vals,
        }

    @classmethod
    def restore(
        cls, snap: dict, windows: Sequence[timedelta], allowed_lateness: timedelta = timedelta(0)
    ) -> RollingState:
        """Rebuild a state from `snapshot()`; the configuration may only shrink what must be retained.

        Raises ValueError when the snapshot is of another version, or when the new longest window or
        lateness is larger than the snapshot's (it would lack events those need).
        """
        state = cls(windows, allowed_lateness)
        if snap.get("version") != SNAPSHOT_VERSION:
            raise ValueError(f"unknown rolling-state snapshot version {snap.get('version')!r}")
        if state._lmax > max(snap["windows_us"]) or state.lateness_us > snap["lateness_us"]:
            raise ValueError(
                "cannot resume rolling state with a longer window or allowed lateness than it was saved "
                f"with (saved windows_us={snap['windows_us']}, lateness_us={snap['lateness_us']}); "
                "start from a fresh recovery store"
            )
        keys, sizes = snap["keys"], snap["sizes"].astype(np.int64)
        n = len(keys)
        caps = np.left_shift(1, np.ceil(np.log2(np.maximum(sizes, K.MIN_CAP))).astype(np.int64))
        bases = np.zeros(n, np.int64)
        if n:
            bases[1:] = np.cumsum(caps)[:-1]
        top = int(caps.sum())
        state._meta = np.zeros((max(64, n), 4), np.int64)
        state._meta[:n, K.BASE] = bases
        state._meta[:n, K.SIZE] = sizes
        state._meta[:n, K.CAP] = caps
        state._ts = np.zeros(max(1024, top + top // 2), np.int64)
        state._val = np.zeros(state._ts.shape[0], np.float64)
        offsets = np.repeat(bases - np.concatenate(([0], np.cumsum(sizes)[:-1])), sizes)
        idx = np.arange(int(sizes.sum()), dtype=np.int64) + offsets
        state._ts[idx] = snap["ts_us"]
        state._val[idx] = snap["values"]
        state._key_of = list(keys)
        state._slot_of = {k: i for i, k in enumerate(keys)}
        state._scalars[K.TOP] = top
        state._scalars[K.SHARD_MAX] = snap["shard_max_us"]
        return state
