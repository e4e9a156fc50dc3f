"""backup.json records and what the reader saw of them, shared by the catalog's unit tests."""

import calendar

from ansible_collections.pgexclusive.backup.plugins.module_utils.catalog import decide

GOOD = {"format": 1, "label": "b", "status": "complete", "system_identifier": "7", "host": "db1",
        "data_directory": "/var/lib/pg", "method": "copy", "compression": "none", "timeline": 1,
        "start_lsn": "0/2000028", "stop_lsn": "0/3000100", "start_wal_file": "000000010000000000000002",
        "stop_wal_file": "000000010000000000000003", "archived": True, "start_time": "2026-12-01 10:00:00 UTC",
        "duration": 30.5, "copy_duration": 20.0, "bytes": 1000, "output_bytes": 900,
        "finished_at": "2026-12-01T10:01:00Z"}
OK_DRILL = {"time": "2026-12-02T00:00:00Z", "ok": True, "check_ran": True, "duration": 9, "checks": []}
BAD_DRILL = {"time": "2026-12-03T00:00:00Z", "ok": False, "check_ran": True, "duration": 9, "checks": [],
             "error": "returned '1', expected '2'"}
T0 = float(calendar.timegm((2026, 12, 1, 10, 0, 0)))
UNRUN_DRILL = {"time": "2026-12-04T00:00:00Z", "ok": False, "check_ran": False, "duration": 1, "checks": [],
               "error": "no pg_ctl"}


def seen_of(record, **facts):
    cleaned, wrong = decide.clean(record)
    return dict({"entry": "directory", "record": cleaned, "wrong_fields": wrong, "record_error": None}, **facts)


def rows_and_records(*backups):
    rows, records = [], {}
    for label, record, facts in backups:
        seen = seen_of(record, **facts)
        rows.append(decide.row(label, "/d/" + label, seen, decide.judge(seen)))
        records[label] = seen["record"] or {}
    return rows, records


NOW = T0 + 86400 * 4
