import pytest

from ansible_collections.pgexclusive.backup.plugins.module_utils.restore import recovery_target as rt
from ansible_collections.pgexclusive.backup.plugins.module_utils.errors import BackupError


def settings(params, command="cp '/a'/%f %p"):
    return dict(rt.recovery_settings(params, command))


def test_immediate_stops_at_consistency_and_never_archives():
    assert settings({"target": "immediate"}) == {
        "restore_command": "'cp ''/a''/%f %p'",
        "archive_mode": "'off'",
        "archive_command": "''",
        "recovery_target": "'immediate'",
        "recovery_target_action": "'promote'",
    }


def test_latest_sets_no_target_and_no_action():
    assert settings({"target": "latest", "target_timeline": "latest"}) == {
        "restore_command": "'cp ''/a''/%f %p'", "archive_mode": "'off'", "archive_command": "''",
        "recovery_target_timeline": "'latest'"}


@pytest.mark.parametrize("target,option,value,setting", [
    ("time", "target_time", "2026-11-21 14:03:00+00", "recovery_target_time"),
    ("lsn", "target_lsn", "0/3000060", "recovery_target_lsn"),
    ("name", "target_name", "before it's gone", "recovery_target_name"),
    ("xid", "target_xid", "1234", "recovery_target_xid"),
])
def test_point_in_time_targets(target, option, value, setting):
    params = rt.check_target({"target": target, option: value, "target_inclusive": False, "target_action": "pause"})
    conf = settings(params)
    assert conf[setting] == rt.quote(value)
    assert conf["recovery_target_inclusive"] == "'off'" and conf["recovery_target_action"] == "'pause'"
    assert "recovery_target" not in conf


def test_a_target_needs_its_value_and_only_its_value():
    with pytest.raises(BackupError, match="needs target_time"):
        rt.check_target({"target": "time"})
    with pytest.raises(BackupError, match="target_lsn is set, but the recovery target is time"):
        rt.check_target({"target": "time", "target_time": "2026-11-21 14:03:00+00", "target_lsn": "0/1"})
    with pytest.raises(BackupError, match="is not an LSN"):
        rt.check_target({"target": "lsn", "target_lsn": "3000060"})
    with pytest.raises(BackupError, match="is not a transaction id"):
        rt.check_target({"target": "xid", "target_xid": "12a"})
    with pytest.raises(BackupError, match="neither latest, current nor a timeline number"):
        rt.check_target({"target": "latest", "target_timeline": "newest"})


def test_time_epoch():
    assert rt.time_epoch("1970-01-01 01:00:00+01") == 0
    assert rt.time_epoch("1970-01-01 00:00:01.5 UTC") == 1.5
    assert rt.time_epoch("1970-01-01T00:00:00Z") == 0
    assert rt.time_epoch("1970-01-01 00:00:00") is None, "no zone: not guessed"


def test_target_before_backup_end():
    record = {"stop_lsn": "0/5000100", "start_time": "2026-11-21 10:00:00 UTC"}
    assert "before the backup's stop LSN 0/5000100" in rt.target_before_backup_end(
        {"target": "lsn", "target_lsn": "0/5000000"}, record)
    assert rt.target_before_backup_end({"target": "lsn", "target_lsn": "0/05000100"}, record) is None
    assert "before the backup started" in rt.target_before_backup_end(
        {"target": "time", "target_time": "2026-11-21 10:59:00+01"}, record)
    assert rt.target_before_backup_end({"target": "time", "target_time": "2026-11-21 10:00:01+00"}, record) is None
    assert rt.target_before_backup_end({"target": "immediate"}, record) is None


def test_explain_recovery_failure_names_the_missing_segment():
    log = ("cp: cannot stat '/srv/archive/000000010000000000000007': No such file or directory\n"
           "LOG:  redo done at 0/6000100\n"
           "FATAL:  recovery ended before configured recovery target was reached\n")
    msg, hint = rt.explain_recovery_failure(log, LISTED)
    assert msg.startswith("The recovery target is past the last archived WAL: recovery replayed all of it")
    assert "redo ended at 0/6000100" in msg and "latest" in hint
    assert rt.missing_segments_in_log(log) == ["000000010000000000000007"]
    msg, _hint = rt.explain_recovery_failure(
        "cp: cannot stat '/a/000000010000000000000003': No such file or directory\n"
        "FATAL:  WAL ends before end of online backup\n")
    assert msg == "The restore needs the WAL segment 000000010000000000000003, which restore_command did not find."
    assert "before the end of the backup" in rt.explain_recovery_failure(
        "FATAL:  requested recovery stop point is before consistent recovery point")[0]
    assert rt.explain_recovery_failure("LOG:  something else") is None


PAST_THE_ARCHIVE = (
    '2026-12-06 13:50:01.100 UTC [77] LOG:  restored log file "00000002.history" from archive\n'
    '2026-12-06 13:50:01.200 UTC [77] LOG:  restored log file "000000010000000000000005" from archive\n'
    '2026-12-06 13:50:01.300 UTC [77] LOG:  restored log file "000000010000000000000006" from archive\n'
    "cp: cannot stat '/srv/archive/000000010000000000000007': No such file or directory\n"
    "2026-12-06 13:50:01.400 UTC [77] LOG:  redo done at 0/6000148 system usage: CPU: user: 0.00 s\n"
    "2026-12-06 13:50:01.400 UTC [77] LOG:  last completed transaction was at log time 2026-12-06 13:49:00.5+00\n"
    "2026-12-06 13:50:01.400 UTC [77] FATAL:  recovery ended before configured recovery target was reached\n")


def test_replay_end_in_log():
    assert rt.replay_end_in_log(PAST_THE_ARCHIVE) == {
        "segment": "000000010000000000000006", "lsn": "0/6000148", "last_commit": "2026-12-06 13:49:00.5+00"}
    assert rt.replay_end_in_log("LOG:  redo done at 0/3000060\n") == {"lsn": "0/3000060"}, "WAL from pg_wal/"
    assert rt.replay_end_in_log("") == {}


LISTED = {"checked": True, "gap": None, "newest_segment": "000000010000000000000006", "timeline": 1, "allowed": False}


def test_a_target_past_an_accepted_gap_is_never_said_to_have_replayed_all_the_archive():
    gap = dict(LISTED, gap="000000010000000000000007", newest_segment="000000010000000000000009", allowed=True)
    msg, hint = rt.explain_recovery_failure(PAST_THE_ARCHIVE, gap)
    assert msg.startswith("The recovery target is past a gap in the archived WAL: recovery ended at the missing segment "
                          "000000010000000000000007 (allow_wal_gap accepted ending there), before reaching the target "
                          "(the last segment replayed was 000000010000000000000006;"), msg
    assert "replayed all" not in msg and "Put 000000010000000000000007 back into the archive" in hint
    unlisted = {"checked": False, "reason": "a custom restore_command fetches WAL from where only it knows"}
    msg, _hint = rt.explain_recovery_failure(PAST_THE_ARCHIVE, unlisted)
    assert msg.startswith("The recovery target is past the last WAL recovery found: it ended before reaching the target")
    assert "replayed all" not in msg and "not listed for gaps (a custom restore_command" in msg


def test_ended_because():
    assert rt.ended_because("time", LISTED) == "target reached"
    assert rt.ended_because("latest", LISTED) == "end of archived WAL"
    assert rt.ended_because("latest", dict(LISTED, gap="000000010000000000000007")) == \
        "gap at segment 000000010000000000000007"
    assert rt.ended_because("latest", {"checked": False, "reason": "r"}) == \
        "end of the WAL recovery found (not listed for gaps: r)"


def test_a_target_past_the_archive_names_the_last_segment_replayed_and_what_to_do():
    msg, hint = rt.explain_recovery_failure(PAST_THE_ARCHIVE, LISTED)
    assert msg == ("The recovery target is past the last archived WAL: recovery replayed all of it and ended before "
                   "reaching the target (the last segment replayed was 000000010000000000000006; redo ended at "
                   "0/6000148; the last transaction replayed committed at 2026-12-06 13:49:00.5+00).")
    assert "the WAL after 000000010000000000000006 into the archive" in hint and "force: true" in hint
    msg, hint = rt.explain_recovery_failure(
        "FATAL:  recovery ended before configured recovery target was reached\n", LISTED)
    assert msg.endswith("ended before reaching the target.") and "the WAL after the last segment replayed into" in hint
