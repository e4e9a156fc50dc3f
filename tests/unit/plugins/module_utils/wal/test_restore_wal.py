import pytest

from ansible_collections.pgexclusive.backup.plugins.module_utils.wal import restore_wal
from ansible_collections.pgexclusive.backup.plugins.module_utils.errors import BackupError

RECORD = {"start_wal_file": "000000010000000000000002", "start_lsn": "0/2000028"}


def seg(tli, n):
    return "%08X%08X%08X" % (tli, 0, n)


def plan(names, histories=None, **params):
    params.setdefault("target", "latest")
    return restore_wal.plan(params, RECORD, lambda: (set(names), histories or {}))


def test_latest_without_a_gap_runs_to_the_newest_segment():
    found = plan([seg(1, n) for n in range(2, 9)] + ["000000010000000000000002.00000028.backup"])
    assert found == {"checked": True, "timeline": 1, "gap": None, "newest_segment": seg(1, 8), "allowed": False}


@pytest.mark.parametrize("target,extra", [("latest", {}), ("time", {"target_time": "2999-01-01 00:00:00+00"}),
                                          ("name", {"target_name": "x"}), ("xid", {"target_xid": "9"})])
def test_a_gap_before_the_newest_segment_is_named_for_every_unplaced_target(target, extra):
    names = [seg(1, n) for n in (2, 3, 4, 6, 7)]
    found = plan(names, target=target, **extra)
    assert (found["gap"], found["newest_segment"]) == (seg(1, 5), seg(1, 7))


def test_an_lsn_target_needs_the_segments_up_to_its_own_only():
    names = [seg(1, n) for n in (2, 3, 4, 6, 7)]
    assert plan(names, target="lsn", target_lsn="0/4FFFFFF")["gap"] is None
    assert plan(names, target="lsn", target_lsn="0/5000000")["gap"] == seg(1, 5)
    assert plan(names, target="lsn", target_lsn="0/7000000")["gap"] == seg(1, 5)
    # Past the archive's end is not a gap: recovery reports it ended before the target.
    assert plan([seg(1, n) for n in (2, 3)], target="lsn", target_lsn="1/0")["gap"] is None


def test_segments_before_the_backup_and_other_files_do_not_count():
    names = [seg(1, 1), seg(1, 2), seg(1, 3), seg(1, 4) + ".partial", "00000001.history", "junk"]
    assert plan(names)["gap"] is None and plan(names)["newest_segment"] == seg(1, 3)


def test_the_latest_timeline_is_followed_through_its_history_file():
    history = "1\t0/5000060\tno recovery target specified\n"
    names = [seg(1, n) for n in range(2, 9)] + [seg(2, n) for n in (5, 6, 7)] + ["00000002.history"]
    found = plan(names, {2: history})
    assert found == {"checked": True, "timeline": 2, "gap": None, "newest_segment": seg(2, 7), "allowed": False}
    # Timeline 2 needs its own copy of the segment it began in, and timeline 1's before it.
    assert plan([n for n in names if n != seg(2, 5)], {2: history})["gap"] == seg(2, 5)
    assert plan([n for n in names if n != seg(1, 4)], {2: history})["gap"] == seg(1, 4)
    # Timeline 1's segments after the switch are not on timeline 2's way: missing, they make no gap.
    assert plan([n for n in names if n != seg(1, 6)], {2: history})["gap"] is None
    # Staying on the backup's timeline follows timeline 1 to its newest segment.
    assert plan(names, {2: history}, target_timeline="current")["newest_segment"] == seg(1, 8)
    assert plan([n for n in names if n != seg(1, 6)], {2: history}, target_timeline="1")["gap"] == seg(1, 6)


def test_three_timelines_chain():
    history3 = "1\t0/4000000\tx\n2\t0/6000100\ty\n"
    assert restore_wal.chain(3, restore_wal.parse_history(history3)) == [(1, 0), (2, 0x4000000), (3, 0x6000100)]
    names = [seg(1, 2), seg(1, 3), seg(2, 4), seg(2, 5), seg(3, 6), seg(3, 7), "00000002.history", "00000003.history"]
    assert plan(names, {3: history3}) == {
        "checked": True, "timeline": 3, "gap": None, "newest_segment": seg(3, 7), "allowed": False}


def test_what_cannot_be_listed_says_why():
    assert restore_wal.plan({"target": "latest", "restore_command": "fetch %f %p"}, RECORD, None)["checked"] is False
    assert "restore_command" in plan([], restore_command="fetch %f %p")["reason"]
    assert plan([], target="immediate")["checked"] is False
    assert "no readable history file of timeline 2" in plan([seg(1, 2)], target_timeline="2")["reason"]
    assert "branched off before the backup" in plan([seg(1, 2), "00000002.history"],
                                                    {2: "1\t0/1000000\tx\n"})["reason"]
    assert restore_wal.plan({"target": "latest"}, {}, None)["checked"] is False


def test_accepting_the_gap_is_recorded():
    assert plan([seg(1, 2), seg(1, 4)], allow_wal_gap=True)["allowed"] is True
    assert plan([seg(1, 2), seg(1, 3)], allow_wal_gap=True)["allowed"] is False


def test_the_gap_error_names_the_segment_and_says_nothing_was_restored():
    found = plan([seg(1, 2), seg(1, 4)])
    error = restore_wal.gap_error(found, {"target": "latest"}, "/srv/wal")
    assert error.msg == ("The WAL archive (/srv/wal) has a gap: the segment %s is missing, and later segments (up to "
                         "%s) are there. Recovery to latest would end at the gap, before the newest archived WAL. "
                         "Nothing was restored." % (seg(1, 3), seg(1, 4)))
    assert "allow_wal_gap: true" in error.hint and error.facts["wal_gap"] == seg(1, 3)
    timed = restore_wal.gap_error(found, {"target": "time", "target_time": "2030-01-01 00:00:00+00"}, "/srv/wal")
    assert "Recovery to target_time 2030-01-01 00:00:00+00 would end at the gap" in timed.msg


def test_a_bad_history_line_is_refused():
    with pytest.raises(BackupError):
        restore_wal.parse_history("1 not-an-lsn reason\n")


def test_listing_reads_the_archive_and_its_history_files(tmp_path):
    (tmp_path / seg(1, 2)).write_text("")
    (tmp_path / "00000002.history").write_text("1\t0/5000000\tx\n")
    names, histories = restore_wal.listing(str(tmp_path), {seg(1, 3)})
    assert names == {seg(1, 2), seg(1, 3), "00000002.history"} and histories == {2: "1\t0/5000000\tx\n"}
    with pytest.raises(BackupError) as caught:
        restore_wal.listing(str(tmp_path / "missing"), ())
    assert caught.value.msg.startswith("The WAL archive %s cannot be listed" % (tmp_path / "missing"))
