from datetime import datetime, timedelta

from ansible_collections.pgexclusive.backup.plugins.module_utils.wal.archiving import (
    archiving_health, given_up, not_yet_archived, restore_point_name)

T0 = datetime(2026, 11, 21, 10, 0, 0)
GOOD = {"wal_level": "replica", "archive_mode": "on", "archive_command": "cp %p /a/%f", "archive_library": None}


def test_healthy_after_a_success():
    healthy, reason = archiving_health(GOOD, {"last_archived_time": T0, "last_archived_wal": "000000010000000000000002"})
    assert healthy and "000000010000000000000002" in reason


def test_healthy_when_nothing_happened_yet():
    assert archiving_health(GOOD, {})[0] is True


def test_archive_mode_off():
    healthy, reason = archiving_health(dict(GOOD, archive_mode="off"), {})
    assert not healthy and "archive_mode is off" in reason


def test_wal_level_minimal():
    healthy, reason = archiving_health(dict(GOOD, wal_level="minimal", archive_mode="off"), {})
    assert not healthy and "minimal" in reason


def test_no_command_nor_library():
    healthy, reason = archiving_health(dict(GOOD, archive_command=""), {})
    assert not healthy and "neither archive_command nor archive_library" in reason


def test_library_without_command_is_fine():
    assert archiving_health(dict(GOOD, archive_command="", archive_library="basic_archive"), {})[0] is True


def test_command_hidden_from_a_non_superuser_is_not_judged():
    assert archiving_health(dict(GOOD, archive_command=None), {})[0] is True


def test_failure_newer_than_last_success():
    archiver = {"last_archived_time": T0, "last_archived_wal": "000000010000000000000002",
                "last_failed_time": T0 + timedelta(seconds=5), "last_failed_wal": "000000010000000000000003"}
    healthy, reason = archiving_health(GOOD, archiver)
    assert not healthy and "000000010000000000000003" in reason


def test_failure_older_than_last_success():
    archiver = {"last_archived_time": T0 + timedelta(seconds=5), "last_failed_time": T0}
    assert archiving_health(GOOD, archiver)[0] is True


def test_failure_and_never_a_success():
    assert archiving_health(GOOD, {"last_failed_time": T0, "last_failed_wal": "x"})[0] is False


def test_not_yet_archived_uses_the_archiver_or_done_files():
    names = ["000000010000000000000002.00000028.backup", "000000010000000000000003"]
    assert not_yet_archived(names, "000000010000000000000002") == names
    assert not_yet_archived(names, "000000010000000000000003") == []
    assert not_yet_archived(names, None, ["000000010000000000000003.done"]) == names[:1]
    assert not_yet_archived(names, "000000010000000000000002.00000028.backup") == names[1:]


def test_restore_point_name_fits():
    assert restore_point_name("x") == "pgx-verify x"
    assert len(restore_point_name("é" * 100).encode("utf-8")) <= 63


def state(archived, failed, last_failed=None):
    return {"archived_count": archived, "failed_count": failed, "last_failed_wal": last_failed}


def test_the_archiver_gives_up_after_three_failures_in_a_row():
    seg = "000000010000000000000005"
    first = state(7, 2, "000000010000000000000001")
    assert given_up(first, state(7, 4, seg)) is None, "two failures: it tries once more at once"
    assert given_up(first, state(7, 5, seg)) == seg
    assert given_up(first, state(8, 5, seg)) is None, "it archived something meanwhile: not stuck"
    assert given_up(state(0, 0), state(0, 3, seg)) == seg
    assert given_up(state(None, None), state(None, None)) is None
