import pytest

from ansible_collections.pgexclusive.backup.plugins.module_utils.backup_label import (
    describe_backup, parse_backup_label, parse_tablespace_map, start_time_epoch, validate_label)
from ansible_collections.pgexclusive.backup.plugins.module_utils.errors import BackupError

LABEL = """START WAL LOCATION: 0/2000028 (file 000000010000000000000002)
CHECKPOINT LOCATION: 0/2000060
BACKUP METHOD: pg_start_backup
BACKUP FROM: primary
START TIME: 2026-11-21 10:56:35 UTC
LABEL: nightly 'x'; y
START TIMELINE: 1
"""


def test_parse_backup_label():
    assert parse_backup_label(LABEL) == {
        "start_lsn": "0/2000028", "start_wal_file": "000000010000000000000002", "checkpoint_lsn": "0/2000060",
        "method": "pg_start_backup", "backup_from": "primary", "start_time": "2026-11-21 10:56:35 UTC",
        "label": "nightly 'x'; y", "timeline": 1}


@pytest.mark.parametrize("label", ["", None, "a\nb", "a\rb", "a\x00b", "x" * 1025, "é" * 513])
def test_invalid_labels(label):
    with pytest.raises(BackupError):
        validate_label(label)


def test_valid_labels_are_kept_literally():
    for label in ("x" * 1024, "it's; DROP TABLE t; --", "é" * 512):
        assert validate_label(label) == label


def test_tablespace_map_with_escapes():
    text = "16390 /srv/tblspc/fast\n16391 /srv/with space\n16392 /srv/back\\\\slash\n"
    assert parse_tablespace_map(text) == [
        {"oid": 16390, "name": None, "location": "/srv/tblspc/fast", "path": "/srv/tblspc/fast"},
        {"oid": 16391, "name": None, "location": "/srv/with space", "path": "/srv/with space"},
        {"oid": 16392, "name": None, "location": "/srv/back\\slash", "path": "/srv/back\\slash"},
    ]
    assert parse_tablespace_map(None) == []


def test_start_time_epoch():
    assert start_time_epoch("1970-01-01 00:01:00 UTC") == 60
    assert start_time_epoch("1970-01-01 01:01:00 +01") == 60
    assert start_time_epoch("1970-01-01 00:01:00 -0130") == 60 + 5400
    assert start_time_epoch("2026-11-21 10:56:35 CET") is None


def test_describe_backup():
    assert describe_backup(parse_backup_label(LABEL)) == "'nightly 'x'; y' started 2026-11-21 10:56:35 UTC"


# Every character str.splitlines() splits on, and the other controls: a label holding one
# would be split by some reader, and the stop would not find the label it started.
@pytest.mark.parametrize("char", ["\u2028", "\u2029", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\t", "\x7f",
                                  "\x1b"])
def test_labels_with_separators_or_controls_are_refused(char):
    with pytest.raises(BackupError, match="U\\+%04X" % ord(char)):
        validate_label("nightly%sthen" % char)


def test_every_character_splitlines_splits_on_is_refused():
    splitters = [chr(c) for c in range(0x110000) if len(("a%sb" % chr(c)).splitlines()) > 1]
    for char in splitters:
        with pytest.raises(BackupError):
            validate_label("a%sb" % char)


def test_parser_splits_on_newline_only():
    text = LABEL.replace("LABEL: nightly 'x'; y", "LABEL: a\u2028b\x0bc")
    assert parse_backup_label(text)["label"] == "a\u2028b\x0bc"
    assert parse_tablespace_map("16384 /srv/ts\u2028x\n") == [{"oid": 16384, "name": None, "location": "/srv/ts\u2028x", "path": "/srv/ts\u2028x"}]
