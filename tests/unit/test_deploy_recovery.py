"""This pod's share of the recovery partitions (streamguard.deploy.pod.recovery), on real Bytewax partition files."""

from __future__ import annotations

import pytest

from streamguard.deploy.pod.recovery import (
    PartitionLayout,
    RecoveryLayoutError,
    ensure_owned_partitions,
    partition_file,
    read_partition_header,
)


@pytest.mark.parametrize(("partitions", "holders"), [(12, 3), (4, 4), (5, 2), (3, 5), (1, 1), (7, 1)])
def test_every_partition_has_exactly_one_holder(partitions, holders):
    layout = PartitionLayout(partitions, holders)
    owned = [k for pid in range(holders + 2) for k in layout.owned_by(pid)]
    assert sorted(owned) == list(range(partitions))


def test_layout_spreads_partitions_round_robin_and_later_pods_hold_none():
    layout = PartitionLayout(partitions=12, holders=3)
    assert layout.owned_by(0) == (0, 3, 6, 9)
    assert layout.owned_by(2) == (2, 5, 8, 11)
    assert layout.owned_by(3) == ()  # a pod added by a scale-up


def test_a_cluster_smaller_than_the_holders_is_refused():
    layout = PartitionLayout(partitions=12, holders=3)
    layout.check_cluster_size(3)
    layout.check_cluster_size(6)
    with pytest.raises(RecoveryLayoutError, match="cannot see partitions held by pods 2..2"):
        layout.check_cluster_size(2)
    with pytest.raises(RecoveryLayoutError):
        PartitionLayout(partitions=0, holders=1)


def test_first_start_creates_only_this_pods_partitions(tmp_path):
    volume = tmp_path / "recovery"
    created = ensure_owned_partitions(volume, PartitionLayout(partitions=5, holders=2), process_id=1)
    assert created == (1, 3)
    assert sorted(p.name for p in volume.iterdir()) == ["part-1.sqlite3", "part-3.sqlite3"]
    assert read_partition_header(partition_file(volume, 3)) == (3, 5)


def test_restart_keeps_existing_partitions_untouched(tmp_path):
    layout = PartitionLayout(partitions=4, holders=2)
    ensure_owned_partitions(tmp_path, layout, 0)
    before = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    assert ensure_owned_partitions(tmp_path, layout, 0) == ()
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()} == before


def test_pods_sharing_one_volume_each_add_their_own_files(tmp_path):
    layout = PartitionLayout(partitions=4, holders=2)
    assert ensure_owned_partitions(tmp_path, layout, 0) == (0, 2)
    assert ensure_owned_partitions(tmp_path, layout, 1) == (1, 3)
    assert [read_partition_header(partition_file(tmp_path, k)) for k in range(4)] == [
        (k, 4) for k in range(4)
    ]


def test_a_pod_beyond_the_holders_creates_no_partition(tmp_path):
    volume = tmp_path / "recovery"
    assert ensure_owned_partitions(volume, PartitionLayout(partitions=4, holders=2), process_id=2) == ()
    # The directory itself must exist: Bytewax aborts the whole cluster on a missing one.
    assert volume.is_dir()
    assert not list(volume.iterdir())


def test_a_partly_lost_volume_is_an_error_not_silently_refilled(tmp_path):
    layout = PartitionLayout(partitions=6, holders=2)
    ensure_owned_partitions(tmp_path, layout, 0)
    partition_file(tmp_path, 2).unlink()
    with pytest.raises(RecoveryLayoutError, match=r"holds partitions \[0, 4\] but not \[2\]"):
        ensure_owned_partitions(tmp_path, layout, 0)


def test_a_store_made_for_another_partition_count_is_refused(tmp_path):
    ensure_owned_partitions(tmp_path, PartitionLayout(partitions=4, holders=2), 0)
    with pytest.raises(RecoveryLayoutError, match="is partition 0 of 4, expected 0 of 6"):
        ensure_owned_partitions(tmp_path, PartitionLayout(partitions=6, holders=2), 0)


def test_no_scratch_folder_is_left_behind(tmp_path):
    ensure_owned_partitions(tmp_path, PartitionLayout(partitions=8, holders=4), 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["part-3.sqlite3", "part-7.sqlite3"]
