"""data_directory reads real files in a temporary directory; no server involved."""

import struct

import pytest

from ansible_collections.pgexclusive.backup.plugins.module_utils.backup_label import parse_tablespace_map
from ansible_collections.pgexclusive.backup.plugins.module_utils.copy.backup_copy import open_sources
from ansible_collections.pgexclusive.backup.plugins.module_utils.data_directory import (
    advice, age_offline, read_data_directory, read_postmaster_pid, system_identifier)
from ansible_collections.pgexclusive.backup.plugins.module_utils.errors import BackupError
from ansible_collections.pgexclusive.backup.tests.unit.plugins.module_utils.crashed_primary import LABEL, make_datadir


@pytest.fixture
def datadir(tmp_path):
    return make_datadir(tmp_path)


def test_not_a_data_directory(tmp_path):
    with pytest.raises(BackupError, match="PG_VERSION"):
        read_data_directory(str(tmp_path))


def test_clean_directory(datadir):
    facts, backup = read_data_directory(str(datadir))
    assert backup is None and facts["pg_version"] == "15" and facts["postmaster_pid"] is None
    assert "starts normally" in advice(facts, backup, False)


def test_crashed_primary_with_missing_checkpoint_wal(datadir):
    (datadir / "backup_label").write_text(LABEL)
    (datadir / "postmaster.pid").write_text("4242\n/data\n")
    (datadir / "pg_wal" / "000000010000000000000002").write_text("")
    (datadir / "pg_tblspc" / "16390").symlink_to("/srv/ts")
    facts, backup = read_data_directory(str(datadir))
    assert backup["label"] == "nightly" and backup["tablespace_map"] == []
    assert facts["needed_wal_files"] == ["000000010000000000000002", "000000010000000000000003"]
    assert facts["missing_wal_files"] == ["000000010000000000000003"]
    assert facts["tablespaces"] == [{"oid": 16390, "name": None, "location": "/srv/ts", "path": "/srv/ts"}]
    text = advice(facts, backup, False)
    assert "4242" in text and "will fail" in text and "move backup_label" in text


def test_restored_copy_keeps_its_label(datadir):
    (datadir / "backup_label").write_text(LABEL)
    (datadir / "recovery.signal").write_text("")
    facts, backup = read_data_directory(str(datadir))
    text = advice(facts, backup, False)
    assert "Never remove it" in text and "move backup_label" not in text


def test_age_offline():
    facts_backup = {"start_time": "1970-01-01 00:00:00 UTC"}
    assert age_offline(facts_backup, now=90) == 90
    assert age_offline({"start_time": "1970-01-01 00:00:00 CET"}, now=90) is None


def test_system_identifier_is_read_from_pg_control(tmp_path):
    (tmp_path / "global").mkdir()
    (tmp_path / "global" / "pg_control").write_bytes(struct.pack("=Q", 7310592362290628506) + b"\0" * 100)
    assert system_identifier(str(tmp_path)) == "7310592362290628506"
    assert system_identifier(str(tmp_path / "missing")) is None


def test_postmaster_pid_is_read_from_its_first_line(tmp_path):
    assert read_postmaster_pid(str(tmp_path)) is None
    (tmp_path / "postmaster.pid").write_text("4242\n/var/lib/postgresql/15/main\n1700000000\n5432\n")
    assert read_postmaster_pid(str(tmp_path)) == 4242
    (tmp_path / "postmaster.pid").write_text("")
    with pytest.raises(ValueError):
        read_postmaster_pid(str(tmp_path))


def test_a_postmaster_pid_being_written_is_not_taken_for_no_server(datadir):
    (datadir / "postmaster.pid").write_text("")
    with pytest.raises(BackupError, match="does not start with a PID"):
        read_data_directory(str(datadir))


def test_an_in_place_tablespace_is_part_of_the_data_directory(datadir, tmp_path):
    # allow_in_place_tablespaces (15+) makes pg_tblspc/<oid> a directory: reading it as a link failed the facts.
    (datadir / "pg_tblspc" / "16391").mkdir()
    (tmp_path / "ts").mkdir()
    (datadir / "pg_tblspc" / "16392").symlink_to(tmp_path / "ts")
    facts, _backup = read_data_directory(str(datadir))
    assert [t["oid"] for t in facts["tablespaces"]] == [16392]


def test_one_tablespace_shape_from_the_links_the_map_and_the_copy(datadir, tmp_path):
    (tmp_path / "ts").mkdir()
    (datadir / "pg_tblspc" / "16392").symlink_to(tmp_path / "ts")
    facts, _backup = read_data_directory(str(datadir))
    from_map = parse_tablespace_map("16392 %s\n" % (tmp_path / "ts"))
    with open_sources(str(datadir)) as sources:
        assert facts["tablespaces"] == from_map == sources.records()
