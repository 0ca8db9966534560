"""Compiled loops over a shard's event arena: fold a batch in, evict, drop idle keys, defragment, gather.

Layout (owned by `RollingState`, passed in as plain arrays so numba can compile these without classes):

- `ts_arena` (int64) and `val_arena` (float64): every key's retained events, one ring buffer per key. A ring
  holds the key's events sorted by event time; its capacity is a power of two, so `& (cap - 1)` wraps.
- `meta` (int64, one row per slot): `[base, head, size, cap]`. `base` is where the ring starts in the arena,
  `head` the ring offset of the oldest event. `size == -1` marks a free slot, `size == 0` a fresh one.
- `scalars` (int64): `[arena_top, shard_max_ts]`.

Window lengths arrive sorted ascending; `dest[w]` is the output row of window `w` in the caller's order.
Sums are recomputed from the retained values for every event (one backward scan over the longest window,
with compensated summation), so they are as exact as `math.fsum` of the window: no running sum drifts.
Cost per event is one compiled pass over the key's events in its longest window (a few ns each).

Without numba these run as plain Python over numpy arrays: correct, but about 100 times slower.
"""

from __future__ import annotations

import warnings

import numpy as np

try:
    from numba import njit
except ImportError:  # pragma: no cover - exercised only where numba is missing
    warnings.warn(
        "numba is not installed: flows.rolling runs its kernels as plain Python (about 100x slower)",
        RuntimeWarning,
        stacklevel=2,
    )

    def njit(*_args, **_kwargs):
        return lambda fn: fn


BASE, HEAD, SIZE, CAP = 0, 1, 2, 3
TOP, SHARD_MAX = 0, 1
NO_TS = np.iinfo(np.int64).min
"""`shard_max_ts` before the shard has accepted any event."""
MIN_CAP = 2

LATE_KEY, LATE_SHARD = 1, 2
"""Why an event was rejected: older than its key's watermark; older than the shard's horizon."""


@njit(cache=True, nogil=True)
def fold_batch(
    ts_arena, val_arena, meta, scalars, config, slot_times, values, start, late, counts, floats, marks
):  # fmt: skip  # pragma: no cover - compiled; covered through RollingState
    """Fold events `start..` into their keys' rings and write each event's aggregates.

    `slot_times` rows: each event's slot and time. Returns `(stop, late)`: `stop` is the index of the
    first event not processed, `len(values)` when done, smaller when the arena has no room to grow that
    event's ring (the caller makes room and calls again from there with the returned count; the work
    already done for that event is idempotent). `late` counts the events so far rejected; `marks` lists
    them, so the caller touches only those.

    `config` is `[lateness, n_windows, windows ascending..., output row of each...]`.
    `counts` rows: count per window. `floats` rows: sums, means, maxes per window, then seconds since the
    previous event (NaN when the longest window holds none). `marks` rows, first `late` columns: late
    events' indices, why, the watermark each failed. Late events' output columns are not written.
    """
    lateness = config[0]
    n_win = config[1]
    win = config[2 : 2 + n_win]
    dest = config[2 + n_win : 2 + 2 * n_win]
    lmax = win[n_win - 1]
    prev_row = 3 * n_win
    arena_cap = ts_arena.shape[0]
    top = scalars[TOP]
    shard_max = scalars[SHARD_MAX]
    n = values.shape[0]
    for i in range(start, n):
        s = slot_times[0, i]
        t = slot_times[1, i]
        v = values[i]
        base = meta[s, BASE]
        head = meta[s, HEAD]
        size = meta[s, SIZE]
        cap = meta[s, CAP]
        if size < 0:  # a reused slot: fresh from here on, so an idle sweep can find it again
            size = 0
            meta[s, SIZE] = 0
        mask = cap - 1
        newest = t
        if size > 0:
            last = ts_arena[base + ((head + size - 1) & mask)]
            if t < last - lateness:
                marks[0, late] = i
                marks[1, late] = LATE_KEY
                marks[2, late] = last - lateness
                late += 1
                continue
            if last > newest:
                newest = last
        if shard_max != NO_TS and t < shard_max - lateness - lmax:
            marks[0, late] = i
            marks[1, late] = LATE_SHARD
            marks[2, late] = shard_max - lateness - lmax
            late += 1
            continue
        if t > shard_max:
            shard_max = t
        # Nothing at or below `floor` can fall in a window of any event this key may still accept.
        floor = max(newest - lateness, shard_max - lateness - lmax) - lmax
        while size > 0 and ts_arena[base + head] <= floor:
            head = (head + 1) & mask
            size -= 1
        if size == cap:
            new_cap = cap * 2 if cap > 0 else MIN_CAP
            if top + new_cap > arena_cap:
                meta[s, HEAD] = head
                meta[s, SIZE] = size
                scalars[TOP] = top
                scalars[SHARD_MAX] = shard_max
                return i, late
            for j in range(size):
                p = base + ((head + j) & mask)
                ts_arena[top + j] = ts_arena[p]
                val_arena[top + j] = val_arena[p]
            base = top
            head = 0
            cap = new_cap
            mask = cap - 1
            top += new_cap
        # Insert after every event with time <= t (events with the same time that came first count).
        lo = 0
        hi = size
        if size > 0 and ts_arena[base + ((head + size - 1) & mask)] <= t:
            lo = size
        while lo < hi:
            mid = (lo + hi) >> 1
            if ts_arena[base + ((head + mid) & mask)] <= t:
                lo = mid + 1
            else:
                hi = mid
        pos = lo
        for j in range(size, pos, -1):
            dst = base + ((head + j) & mask)
            src = base + ((head + j - 1) & mask)
            ts_arena[dst] = ts_arena[src]
            val_arena[dst] = val_arena[src]
        p = base + ((head + pos) & mask)
        ts_arena[p] = t
        val_arena[p] = v
        size += 1
        meta[s, BASE] = base
        meta[s, HEAD] = head
        meta[s, SIZE] = size
        meta[s, CAP] = cap
        # One backward scan from the new event covers the nested windows, shortest first.
        # Sums are compensated (Neumaier), so they match a correctly rounded sum (math.fsum) to within
        # rounding even when large values cancel.
        count = 0
        total = 0.0
        carry = 0.0
        peak = -np.inf
        j = pos
        for w in range(n_win):
            lower = t - win[w]
            while j >= 0:
                q = base + ((head + j) & mask)
                if ts_arena[q] <= lower:
                    break
                x = val_arena[q]
                count += 1
                added = total + x
                if abs(total) >= abs(x):
                    carry += (total - added) + x
                else:
                    carry += (x - added) + total
                total = added
                if x > peak:
                    peak = x
                j -= 1
            row = dest[w]
            exact = total + carry
            counts[row, i] = count
            floats[row, i] = exact
            floats[n_win + row, i] = exact / count
            floats[2 * n_win + row, i] = peak
        before = ts_arena[base + ((head + pos - 1) & mask)] if pos > 0 else t - lmax
        if before > t - lmax:
            floats[prev_row, i] = (t - before) / 1e6
        else:
            floats[prev_row, i] = np.nan
    scalars[TOP] = top
    scalars[SHARD_MAX] = shard_max
    return n, late


@njit(cache=True, nogil=True)
def evict_and_find_idle(ts_arena, meta, n_slots, shard_max, lateness, lmax):  # pragma: no cover
    """Evict what no acceptable event can see any more; free and return the slots left empty.

    A key is idle once even its newest event is older than the shard horizon minus the longest window:
    no event the shard still accepts (see `fold_batch`) can have it in a window.
    """
    idle = np.empty(n_slots, np.int64)
    n_idle = 0
    if shard_max == NO_TS:
        return idle[:0]
    horizon_floor = shard_max - lateness - lmax - lmax
    for s in range(n_slots):
        size = meta[s, SIZE]
        if size < 0:
            continue
        base = meta[s, BASE]
        head = meta[s, HEAD]
        mask = meta[s, CAP] - 1
        if size > 0:
            newest = ts_arena[base + ((head + size - 1) & mask)]
            floor = max(newest - lateness - lmax, horizon_floor)
            while size > 0 and ts_arena[base + head] <= floor:
                head = (head + 1) & mask
                size -= 1
        if size == 0:
            meta[s, BASE] = 0
            meta[s, HEAD] = 0
            meta[s, SIZE] = -1
            meta[s, CAP] = 0
            idle[n_idle] = s
            n_idle += 1
        else:
            meta[s, HEAD] = head
            meta[s, SIZE] = size
    return idle[:n_idle]


@njit(cache=True, nogil=True)
def ring_capacity(size):  # pragma: no cover
    """Return the smallest power-of-two ring capacity (at least `MIN_CAP`) that holds `size` events."""
    cap = MIN_CAP
    while cap < size:
        cap *= 2
    return cap


@njit(cache=True, nogil=True)
def packed_capacity(meta, n_slots):  # pragma: no cover
    """Return the arena length that `defragment` needs for the live rings."""
    total = 0
    for s in range(n_slots):
        if meta[s, SIZE] > 0:
            total += ring_capacity(meta[s, SIZE])
    return total


@njit(cache=True, nogil=True)
def defragment(ts_arena, val_arena, meta, n_slots, new_ts, new_val):  # pragma: no cover
    """Copy every live ring, unrolled and shrunk to fit, into the new arena; return the new top."""
    top = 0
    for s in range(n_slots):
        size = meta[s, SIZE]
        if size < 0:
            continue
        if size == 0:
            meta[s, BASE] = 0
            meta[s, HEAD] = 0
            meta[s, CAP] = 0
            continue
        base = meta[s, BASE]
        head = meta[s, HEAD]
        mask = meta[s, CAP] - 1
        for j in range(size):
            p = base + ((head + j) & mask)
            new_ts[top + j] = ts_arena[p]
            new_val[top + j] = val_arena[p]
        meta[s, BASE] = top
        meta[s, HEAD] = 0
        meta[s, CAP] = ring_capacity(size)
        top += meta[s, CAP]
    return top


@njit(cache=True, nogil=True)
def gather(ts_arena, val_arena, meta, slots, sizes, out_ts, out_val):  # pragma: no cover
    """Copy the listed slots' events, oldest first and key after key, into flat arrays."""
    k = 0
    for i in range(slots.shape[0]):
        s = slots[i]
        base = meta[s, BASE]
        head = meta[s, HEAD]
        mask = meta[s, CAP] - 1
        for j in range(sizes[i]):
            p = base + ((head + j) & mask)
            out_ts[k] = ts_arena[p]
            out_val[k] = val_arena[p]
            k += 1
