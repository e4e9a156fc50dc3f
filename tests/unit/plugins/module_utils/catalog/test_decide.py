"""catalog/decide.py: what a backup's state means, table-driven, every problem kind; where each cluster stands."""

import pytest

from ansible_collections.pgexclusive.backup.plugins.module_utils.catalog import decide
from ansible_collections.pgexclusive.backup.tests.unit.plugins.module_utils.catalog.records import (
    BAD_DRILL, GOOD, NOW, OK_DRILL, T0, UNRUN_DRILL, rows_and_records, seen_of)


CASES = [
    ("complete and sound", seen_of(GOOD), []),
    ("a link", {"entry": "link", "link_to": "/etc"}, ["link"]),
    ("no backup.json", {"entry": "directory", "record": None, "record_error": "missing"}, ["no_record"]),
    ("backup.json not JSON", {"entry": "directory", "record": None, "record_error": "it is not JSON"},
     ["unreadable_record"]),
    ("backup.json a list", seen_of([1, 2]), ["unreadable_record"]),
    ("format 2", seen_of(dict(GOOD, format=2)), ["unknown_format"]),
    ("no format", seen_of(dict((k, v) for k, v in GOOD.items() if k != "format")), ["unknown_format"]),
    ("failed", seen_of(dict(GOOD, status="failed", error="tar exited with 2")), ["failed"]),
    ("failed, its copy not looked at", seen_of(dict(GOOD, status="failed"), manifest="missing"), ["failed"]),
    ("unknown status", seen_of(dict(GOOD, status="running")), ["unknown_status"]),
    ("complete without a stop", seen_of(dict((k, v) for k, v in GOOD.items() if k != "stop_lsn")), ["incomplete"]),
    ("complete, neither archived nor included", seen_of(dict(GOOD, archived=False)), ["incomplete"]),
    ("wrong types", seen_of(dict(GOOD, start_lsn=33554472, bytes="1000")), ["malformed_record", "incomplete"]),
    ("a bool as system identifier", seen_of(dict(GOOD, system_identifier=True)), ["malformed_record"]),
    ("copy disagrees", seen_of(GOOD, copy="its copy holds no backup_label"), ["copy_disagrees"]),
    ("no manifest", seen_of(GOOD, manifest="missing"), ["no_manifest"]),
    ("manifest damaged", seen_of(GOOD, manifest="x does not match its own Manifest-Checksum"), ["manifest_damaged"]),
    ("files differ", seen_of(GOOD, files="base/1 has 3 bytes, the manifest says 4"), ["copy_differs"]),
    ("latest drill failed", seen_of(dict(GOOD, checks=[OK_DRILL, BAD_DRILL])), ["drill_failed"]),
    ("a failed drill, then a good one", seen_of(dict(GOOD, checks=[BAD_DRILL, OK_DRILL])), []),
    ("latest drill could not run", seen_of(dict(GOOD, checks=[UNRUN_DRILL])), []),
    ("a drill entry of the wrong types", seen_of(dict(GOOD, checks=[{"ok": "yes"}])), ["malformed_record"]),
    ("WAL missing", seen_of(GOOD, wal={"missing": "000000010000000000000003", "archive": "/a"}), ["wal_missing"]),
    ("WAL range unknown", seen_of(GOOD, wal={"error": "The backup starts on timeline 1 and stops on timeline 2."}),
     ["wal_unknown"]),
    ("everything at once", seen_of(dict(GOOD, checks=[BAD_DRILL]), copy="x", manifest="missing",
                                   wal={"missing": "000000010000000000000002"}),
     ["copy_disagrees", "no_manifest", "drill_failed", "wal_missing"]),
]


@pytest.mark.parametrize("seen, expected", [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_judge(seen, expected):
    found = decide.judge(seen)
    assert [p["kind"] for p in found] == expected
    for p in found:
        assert p["message"] and p["hint"] == decide.WHAT_TO_DO[p["kind"]]


def test_every_problem_kind_is_judged_by_some_case():
    judged = set(p["kind"] for _name, seen, _expected in CASES for p in decide.judge(seen))
    assert judged == set(decide.WHAT_TO_DO)


def test_messages_carry_what_the_record_says():
    failed = decide.judge(seen_of(dict(GOOD, status="failed", error="tar exited with 2")))[0]["message"]
    assert failed == "The backup failed: tar exited with 2."
    drill = decide.judge(seen_of(dict(GOOD, checks=[BAD_DRILL])))[0]["message"]
    assert "2026-12-03T00:00:00Z" in drill and "expected '2'" in drill
    wal = decide.judge(seen_of(GOOD, wal={"missing": "000000010000000000000003", "archive": "/arch"}))[0]
    assert "000000010000000000000003" in wal["message"] and "/arch" in wal["message"]
    assert decide.judge(seen_of(dict(GOOD, format="1")))[0]["message"].startswith("backup.json is of format none")


def test_clean_keeps_the_types_this_collection_writes():
    cleaned, wrong = decide.clean(dict(GOOD, system_identifier=7, label=["x"], duration="3", archived="yes",
                                       wal_included="000000010000000000000002", checks={"ok": True},
                                       output_bytes={"base.tar": "10"}))
    assert cleaned["system_identifier"] == "7" and "label" not in cleaned and "duration" not in cleaned
    assert wrong == ["archived", "checks", "duration", "label", "output_bytes", "wal_included"]
    tar = decide.clean(dict(GOOD, output_bytes={"base.tar": 10, "16384.tar": 5}))
    assert tar[1] == [] and decide.row("b", "/d/b", {"record": tar[0]}, [])["output_bytes"] == 15
    assert decide.clean("text") == (None, [])


@pytest.mark.parametrize("text, expected", [
    ("2026-12-01 10:00:00 UTC", T0), ("2026-12-01T10:00:00Z", T0),
    ("2026-12-01 10:00:00 GMT", T0), ("2026-12-01 10:00:00 CET", None), ("yesterday", None),
    (12, None), (None, None), ("2026-13-01 10:00:00 UTC", None)])
def test_parse_time(text, expected):
    assert decide.parse_time(text) == expected


def test_stop_time_is_the_start_plus_the_time_in_backup_mode_else_when_recorded():
    assert decide.utc(decide.stop_time(GOOD)) == "2026-12-01T10:00:30Z"
    assert decide.utc(decide.stop_time(dict(GOOD, start_time="2026-12-01 10:00:00 CET"))) == "2026-12-01T10:01:00Z"
    assert decide.stop_time({}) is None


def test_clusters_newest_restorable_and_verified_by_start_lsn_never_by_date():
    other = dict(GOOD, system_identifier="8", host="db2")
    rows, records = rows_and_records(
        ("old-drilled", dict(GOOD, checks=[OK_DRILL]), {}),
        ("new", dict(GOOD, start_lsn="0/5000028", start_wal_file="000000010000000000000005",
                     stop_wal_file="000000010000000000000005", start_time="2026-12-02 10:00:00 UTC"), {}),
        ("newest-bad", dict(GOOD, start_lsn="0/9000028", finished_at="2099-01-01T00:00:00Z"), {"manifest": "missing"}),
        ("dated-2099", dict(GOOD, start_lsn="0/1000028", start_time="2099-01-01 00:00:00 UTC"), {}),
        ("failed-early", {"format": 1, "label": "f", "status": "failed", "host": "db1",
                          "data_directory": "/var/lib/pg"}, {}),
        ("other", dict(other, checks=[BAD_DRILL]), {}),
        ("stray", None, {"record_error": "missing"}),
    )
    by_sid = dict((g["system_identifier"], g) for g in decide.clusters(rows, records, NOW))
    ours = by_sid["7"]
    assert ours["backups"] == ["newest-bad", "new", "old-drilled", "dated-2099", "failed-early"]
    assert (ours["newest_restorable"], ours["newest_restorable_stop_time"]) == ("new", "2026-12-02T10:00:30Z")
    # From the stop time as shown, to the second.
    assert ours["newest_restorable_age"] == NOW - (T0 + 86400 + 30)
    assert (ours["newest_verified"], ours["newest_verified_at"]) == ("old-drilled", "2026-12-02T00:00:00Z")
    assert ours["newest_verified_age"] == NOW - (T0 + 50400)
    theirs = by_sid["8"]
    assert (theirs["backups"], theirs["newest_restorable"], theirs["newest_verified"]) == (["other"], None, None)
    assert theirs["newest_restorable_age"] is None and theirs["newest_verified_age"] is None
    assert by_sid[None]["backups"] == ["stray"]
    assert list(by_sid) == ["7", "8", None]


def test_a_record_without_system_identifier_stays_unnamed_when_two_clusters_share_its_place():
    rows, records = rows_and_records(
        ("a", GOOD, {}), ("b", dict(GOOD, system_identifier="9"), {}),
        ("f", {"format": 1, "status": "failed", "host": "db1", "data_directory": "/var/lib/pg"}, {}))
    by_sid = dict((g["system_identifier"], g["backups"]) for g in decide.clusters(rows, records, NOW))
    assert by_sid == {"7": ["a"], "9": ["b"], None: ["f"]}
