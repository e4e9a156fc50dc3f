"""pg_clear_backup_label's safeguards on real files in a temporary directory; no server involved."""

import os
import struct
import subprocess
import sys

import pytest

from ansible_collections.pgexclusive.backup.plugins.module_utils.clear_backup_label import (
    check_label_may_be_set_aside, clear_backup_label, set_aside_backup_label)
from ansible_collections.pgexclusive.backup.plugins.module_utils.data_directory import read_data_directory
from ansible_collections.pgexclusive.backup.plugins.module_utils.errors import BackupError
from ansible_collections.pgexclusive.backup.plugins.module_utils.safety_stop.records import record_path, write_record
from ansible_collections.pgexclusive.backup.tests.unit.plugins.module_utils.crashed_primary import LABEL, make_datadir


@pytest.fixture
def datadir(tmp_path):
    return make_datadir(tmp_path)


def crashed(datadir, pid=None, signal_file=None):
    (datadir / "backup_label").write_text(LABEL)
    (datadir / "tablespace_map").write_text("16390 /srv/ts\n")
    if pid is not None:
        (datadir / "postmaster.pid").write_text("%d\n/data\n" % pid)
    if signal_file:
        (datadir / signal_file).write_text("")
    return read_data_directory(str(datadir))


# The state record pg_start_backup wrote for LABEL's backup.
RUNNING_RECORD = {"label": "nightly", "outcome": "running", "start_lsn": "0/2000028"}


def test_set_aside_needs_every_safeguard(datadir):
    facts, backup = crashed(datadir, pid=os.getpid())
    with pytest.raises(BackupError, match="is running"):
        check_label_may_be_set_aside(facts, backup, RUNNING_RECORD, "nightly")
    (datadir / "postmaster.pid").unlink()
    for name in ("standby.signal", "recovery.signal"):
        facts, backup = crashed(datadir, signal_file=name)
        with pytest.raises(BackupError, match="Never remove backup_label"):
            check_label_may_be_set_aside(facts, backup, RUNNING_RECORD, "nightly")
        (datadir / name).unlink()
    facts, backup = crashed(datadir)
    with pytest.raises(BackupError, match="did not start"):
        check_label_may_be_set_aside(facts, backup, None, "nightly")
    with pytest.raises(BackupError, match="explicit confirmation") as exc:
        check_label_may_be_set_aside(facts, backup, RUNNING_RECORD, "")
    assert "'nightly'" in exc.value.hint
    check_label_may_be_set_aside(facts, backup, RUNNING_RECORD, "nightly")


def test_a_dead_postmaster_pid_does_not_count_as_running(datadir):
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    facts, backup = crashed(datadir, pid=proc.pid)
    check_label_may_be_set_aside(facts, backup, RUNNING_RECORD, "nightly")


def test_set_aside_renames_and_keeps_the_files(datadir):
    crashed(datadir)
    moved = set_aside_backup_label(str(datadir), "20261121T120000Z")
    assert sorted(os.path.basename(path) for path in moved) == [
        "backup_label.pgexclusive-20261121T120000Z", "tablespace_map.pgexclusive-20261121T120000Z"]
    assert not (datadir / "backup_label").exists()
    assert (datadir / "backup_label.pgexclusive-20261121T120000Z").read_text() == LABEL


# -- pg_clear_backup_label acts only on the live label of a stopped primary ------------------------

CLUSTER = 7310592362290628506


def primary(root, label_text=LABEL, outcome="running", start_lsn="0/2000028"):
    """A stopped primary's data directory at <root>/main with a state record in <root>/state."""
    data = root / "main"
    (data / "pg_wal").mkdir(parents=True)
    (data / "global").mkdir()
    (data / "global" / "pg_control").write_bytes(struct.pack("=Q", CLUSTER) + b"\0" * 100)
    (data / "PG_VERSION").write_text("15\n")
    (data / "backup_label").write_text(label_text)
    if outcome is not None:
        write_record(record_path(str(root / "state"), str(CLUSTER), "nightly"),
                     {"label": "nightly", "outcome": outcome, "start_lsn": start_lsn})
    return data


def clear(data, root, confirm="nightly"):
    return clear_backup_label({"data_directory": str(data), "confirm": confirm,
                               "state_dir": str(root / "state")}, False)


def assert_refused(data, root, why):
    with pytest.raises(BackupError, match=why) as exc:
        clear(data, root)
    assert "Nothing was changed" in exc.value.msg and "backup_label must stay" in str(exc.value)
    assert (data / "backup_label").exists() and not list(data.glob("backup_label.pgexclusive-*"))


def test_clear_sets_aside_the_live_label_of_a_stopped_primary(tmp_path):
    data = primary(tmp_path)
    result = clear(data, tmp_path)
    assert result["changed"] and not (data / "backup_label").exists()
    assert len(list(data.glob("backup_label.pgexclusive-*"))) == 1


def test_clear_accepts_a_primary_whose_safety_stop_found_the_server_down(tmp_path):
    """A crash, then the lease expired while the server was still down: the label is still the live one."""
    data = primary(tmp_path, outcome="expired-unreachable")
    assert clear(data, tmp_path)["changed"]


def test_clear_refuses_a_streamed_label(tmp_path):
    """15+ copies carry BACKUP METHOD: streamed (this collection's fix, pg_basebackup): a copy, not the primary."""
    data = primary(tmp_path, label_text=LABEL.replace("pg_start_backup", "streamed"))
    assert_refused(data, tmp_path, "BACKUP METHOD: streamed")


@pytest.mark.parametrize("where, name", [
    ("parent", "backup.json"), ("parent", "backup_manifest"), ("parent", "backup_label.restorable"),
    ("inside", "backup.json"), ("inside", "backup_manifest"), ("inside", "backup_label.restorable"),
])
def test_clear_refuses_a_restored_backup_layout(tmp_path, where, name):
    """<dest>/<label>/data beside backup.json, or base.tar extracted into <dest>/<label>/ next to it."""
    data = primary(tmp_path)
    (data.parent if where == "parent" else data).joinpath(name).write_text("{}")
    assert_refused(data, tmp_path, "restored backup")


@pytest.mark.parametrize("outcome", ["stopped", "expired-stopped", "expired-not-in-progress",
                                     "expired-other-label", "expired-error"])
def test_clear_refuses_a_label_whose_backup_ended(tmp_path, outcome):
    data = primary(tmp_path, outcome=outcome)
    assert_refused(data, tmp_path, "outcome %s" % outcome)


def test_clear_refuses_a_label_of_another_start(tmp_path):
    data = primary(tmp_path, start_lsn="0/5000028")
    assert_refused(data, tmp_path, "0/5000028")


def test_clear_compares_start_lsns_as_numbers(tmp_path):
    data = primary(tmp_path, start_lsn="0/02000028")
    assert clear(data, tmp_path)["changed"]


def test_clear_refuses_without_a_state_record(tmp_path):
    data = primary(tmp_path, outcome=None)
    with pytest.raises(BackupError, match="did not start"):
        clear(data, tmp_path)
    assert (data / "backup_label").exists()


def test_clear_refuses_a_standby(tmp_path):
    data = primary(tmp_path)
    (data / "standby.signal").write_text("")
    assert_refused(data, tmp_path, "standby")
