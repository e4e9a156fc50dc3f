"""pg_backup_record, pg_backup_wal and pg_backup_retention run as Ansible runs them, on temporary trees.

Each module is executed as a program with its arguments in a file (what
AnsiballZ does), so a traceback, a wrong file or a write outside the backup
directory shows here exactly as it would on a host. No server involved.
"""

import io
import json
import os
import stat
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from ansible_collections.pgexclusive.backup.plugins.module_utils import errors

UTILS = Path(errors.__file__).resolve().parent
MODULES = UTILS.parent / "modules"
# errors.py sits in <collections>/ansible_collections/pgexclusive/backup/plugins/module_utils.
COLLECTIONS = Path(errors.__file__).parents[5]
SEGMENT = 1024 * 1024
START, STOP = "000000010000000000000002", "000000010000000000000003"
HISTORY = START + ".00000028.backup"

FACTS = {
    "label": "nightly", "host": "db1", "system_identifier": "7310592362290628506",
    "data_directory": "/var/lib/postgresql/15/main", "timeline": 1,
    "start_lsn": "0/2000028", "stop_lsn": "0/3000100", "start_wal_file": START, "stop_wal_file": STOP,
    "archived": True,
}


def run_module(name, tmp_path, **args):
    """The module's JSON result, with 'failed' set when it exited non-zero; a traceback fails the test."""
    args_file = tmp_path / ("args-%s.json" % name)
    args_file.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": args}))
    # The parent's own path as well: under ansible-test, ansible itself is found only through it.
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(COLLECTIONS)] + [p for p in sys.path if p]))
    proc = subprocess.run([sys.executable, str(MODULES / (name + ".py")), str(args_file)],
                          capture_output=True, text=True, env=env, check=False)
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    result = json.loads(proc.stdout)
    assert bool(result.get("failed")) == (proc.returncode != 0), result
    return result


def record_of(backup_dir):
    return json.loads((backup_dir / "backup.json").read_text())


# -- pg_backup_record ---------------------------------------------------------

@pytest.mark.parametrize("missing, why", [
    ("stop_lsn", "no stop LSN: this run's stop did not end this backup"),
    ("stop_wal_file", "no stop WAL file"),
    ("start_lsn", "no start LSN"),
    ("archived", "neither archived nor included"),
])
def test_complete_is_refused_without_what_makes_a_backup_restorable(tmp_path, missing, why):
    backup_dir = tmp_path / "nightly"
    backup_dir.mkdir()
    facts = dict(FACTS)
    del facts[missing]
    result = run_module("pg_backup_record", tmp_path, backup_dir=str(backup_dir), status="complete", facts=facts)
    assert result["failed"] and why in result["msg"] and result.get("hint")
    saved = record_of(backup_dir)
    assert saved["status"] == "failed" and why in saved["error"]


def test_included_wal_stands_in_for_archived(tmp_path):
    backup_dir = tmp_path / "nightly"
    backup_dir.mkdir()
    for included, status in (([], "failed"), ([START, STOP], "complete")):
        facts = dict(FACTS, archived=False, wal_included=included)
        run_module("pg_backup_record", tmp_path, backup_dir=str(backup_dir), status="complete", facts=facts)
        assert record_of(backup_dir)["status"] == status


def test_complete_record_is_written_whole_and_readable(tmp_path):
    backup_dir = tmp_path / "nightly"
    backup_dir.mkdir()
    (backup_dir / "base.tar").write_bytes(b"x")
    result = run_module("pg_backup_record", tmp_path, backup_dir=str(backup_dir), status="complete", facts=FACTS)
    assert not result.get("failed") and result["record"]["status"] == "complete"
    saved = record_of(backup_dir)
    assert saved["status"] == "complete" and "error" not in saved
    assert list(saved)[:7] == ["format", "label", "status", "host", "system_identifier", "data_directory",
                               "timeline"]
    assert stat.S_IMODE(os.stat(backup_dir / "backup.json").st_mode) == 0o644
    assert sorted(os.listdir(backup_dir)) == ["backup.json", "base.tar"], "no temporary file is left"


def test_a_started_run_leaves_a_failed_record_even_before_the_copy(tmp_path):
    backup_dir = tmp_path / "dest" / "nightly"
    facts = {"label": "nightly", "start_lsn": "0/2000028", "error": "Start: the connection broke"}
    result = run_module("pg_backup_record", tmp_path, backup_dir=str(backup_dir), status="failed", facts=facts)
    assert not result.get("failed") and result["changed"]
    assert stat.S_IMODE(os.stat(backup_dir).st_mode) == 0o700
    saved = record_of(backup_dir)
    assert saved["status"] == "failed" and saved["error"] == "Start: the connection broke"


def test_an_unwritable_destination_says_backup_json_could_not_be_written(tmp_path):
    (tmp_path / "dest").write_text("a file where the destination should be")
    backup_dir = tmp_path / "dest" / "nightly"
    result = run_module("pg_backup_record", tmp_path, backup_dir=str(backup_dir), status="failed",
                        facts={"label": "nightly", "start_lsn": "0/2000028", "error": "Copy: failed"})
    assert result["failed"] and "backup.json could NOT be written" in result["msg"]
    assert "Not a directory" in result["msg"]


def test_manifest_refuses_a_copy_that_links_to_live_files(tmp_path):
    backup_dir = tmp_path / "nightly"
    data = backup_dir / "data"
    (data / "pg_wal").mkdir(parents=True)
    (data / "PG_VERSION").write_text("15\n")
    live_ts = tmp_path / "live-tablespace"
    live_ts.mkdir()
    (live_ts / "PG_15_202209061").write_text("live")
    (data / "pg_tblspc").mkdir()
    (data / "pg_tblspc" / "16384").symlink_to(live_ts)
    result = run_module("pg_backup_record", tmp_path, backup_dir=str(backup_dir), status="complete",
                        manifest=True, facts=FACTS)
    assert result["failed"] and "outside the backup directory" in result["msg"]
    assert not (backup_dir / "backup_manifest").exists()
    assert record_of(backup_dir)["status"] == "failed"


def test_manifest_of_a_plain_copy_with_its_tablespace_inside(tmp_path):
    backup_dir = tmp_path / "nightly"
    data = backup_dir / "data"
    (data / "pg_wal").mkdir(parents=True)
    (data / "PG_VERSION").write_text("15\n")
    (backup_dir / "tablespaces" / "16384").mkdir(parents=True)
    (backup_dir / "tablespaces" / "16384" / "f").write_text("x")
    (data / "pg_tblspc").mkdir()
    (data / "pg_tblspc" / "16384").symlink_to("../../tablespaces/16384")
    result = run_module("pg_backup_record", tmp_path, backup_dir=str(backup_dir), status="complete",
                        manifest=True, facts=FACTS)
    assert not result.get("failed"), result
    assert result["manifest"]["files"] == 2 and result["manifest"]["verify"].endswith(" -n")
    assert record_of(backup_dir)["status"] == "complete"
    assert json.loads((backup_dir / "backup_manifest").read_text())["Files"][1]["Path"] == "pg_tblspc/16384/f"


def tar_copy(tmp_path):
    """A tar backup as the tar method leaves it: base.tar and 16384.tar of './'-named members."""
    backup_dir = tmp_path / "nightly"
    backup_dir.mkdir()
    data, ts = tmp_path / "live", tmp_path / "ts"
    (data / "pg_wal").mkdir(parents=True)
    (data / "PG_VERSION").write_text("15\n")
    (ts / "PG_15_202209061").mkdir(parents=True)
    (ts / "PG_15_202209061" / "f").write_text("x")
    subprocess.check_call(["tar", "-C", str(data), "-cf", str(backup_dir / "base.tar"), "."])
    subprocess.check_call(["tar", "-C", str(ts), "-cf", str(backup_dir / "16384.tar"), "."])
    return backup_dir


def test_manifest_of_a_tar_copy_lists_the_files_inside_its_archives(tmp_path):
    backup_dir = tar_copy(tmp_path)
    result = run_module("pg_backup_record", tmp_path, backup_dir=str(backup_dir), status="complete",
                        manifest=True, facts=FACTS)
    assert not result.get("failed"), result
    assert result["manifest"]["format"] == "tar" and result["manifest"]["verify"].startswith("pg_verifybackup -F t -n ")
    record = record_of(backup_dir)
    assert record["status"] == "complete" and record["manifest"]["files"] == 2
    paths = [f["Path"] for f in json.loads((backup_dir / "backup_manifest").read_text())["Files"]]
    assert paths == ["PG_VERSION", "pg_tblspc/16384/PG_15_202209061/f"]


def test_a_tar_copy_cut_short_is_recorded_failed_without_a_manifest(tmp_path):
    backup_dir = tar_copy(tmp_path)
    archive = backup_dir / "16384.tar"
    archive.write_bytes(archive.read_bytes()[:700])
    result = run_module("pg_backup_record", tmp_path, backup_dir=str(backup_dir), status="complete",
                        manifest=True, facts=FACTS)
    assert result["failed"] and "16384.tar could not be read back for the backup_manifest" in result["msg"]
    assert not (backup_dir / "backup_manifest").exists()
    assert record_of(backup_dir)["status"] == "failed"


# -- pg_backup_wal ------------------------------------------------------------

@pytest.fixture
def archive(tmp_path):
    path = tmp_path / "archive"
    path.mkdir()
    for name in (START, STOP):
        (path / name).write_bytes(b"\0" * SEGMENT)
    (path / HISTORY).write_text("START WAL LOCATION: 0/2000028 (file %s)\n" % START)
    return path


def wal_args(backup_dir, archive):
    return dict(backup_dir=str(backup_dir), wal_archive_dir=str(archive), start_wal_file=START,
                stop_wal_file=STOP, backup_history_file=HISTORY)


def test_include_wal_never_writes_into_the_live_pg_wal(tmp_path, archive):
    """The copy's pg_wal is a link to the live server's WAL directory: include_wal refuses, writes nothing."""
    live_wal = tmp_path / "live-pg_wal"
    live_wal.mkdir()
    (live_wal / "000000010000000000000009").write_bytes(b"live")
    backup_dir = tmp_path / "nightly"
    (backup_dir / "data").mkdir(parents=True)
    (backup_dir / "data" / "pg_wal").symlink_to(live_wal)
    result = run_module("pg_backup_wal", tmp_path, **wal_args(backup_dir, archive))
    assert result["failed"] and "symbolic link" in result["msg"]
    assert sorted(os.listdir(live_wal)) == ["000000010000000000000009"], "nothing may appear in the live pg_wal"


def test_include_wal_refuses_a_data_directory_link(tmp_path, archive):
    live = tmp_path / "live-data"
    (live / "pg_wal").mkdir(parents=True)
    backup_dir = tmp_path / "nightly"
    backup_dir.mkdir()
    (backup_dir / "data").symlink_to(live)
    result = run_module("pg_backup_wal", tmp_path, **wal_args(backup_dir, archive))
    assert result["failed"] and "symbolic link" in result["msg"]
    assert os.listdir(live / "pg_wal") == []


def test_include_wal_into_a_plain_copy(tmp_path, archive):
    backup_dir = tmp_path / "nightly"
    (backup_dir / "data" / "pg_wal").mkdir(parents=True)
    result = run_module("pg_backup_wal", tmp_path, **wal_args(backup_dir, archive))
    assert not result.get("failed") and result["location"] == "data/pg_wal"
    assert sorted(os.listdir(backup_dir / "data" / "pg_wal")) == sorted([START, STOP, HISTORY])
    assert (backup_dir / "data" / "pg_wal" / STOP).stat().st_size == SEGMENT


def test_include_wal_into_a_tar_backup(tmp_path, archive):
    backup_dir = tmp_path / "nightly"
    backup_dir.mkdir()
    (backup_dir / "base.tar").write_bytes(b"")
    result = run_module("pg_backup_wal", tmp_path, **wal_args(backup_dir, archive))
    assert not result.get("failed") and result["location"] == "pg_wal.tar"
    assert sorted(os.listdir(backup_dir)) == ["base.tar", "pg_wal.tar"]


def test_include_wal_without_a_backup_directory_fails_cleanly(tmp_path, archive):
    result = run_module("pg_backup_wal", tmp_path, **wal_args(tmp_path / "missing", archive))
    assert result["failed"] and str(tmp_path / "missing") in result["msg"]


# -- pg_backup_retention ------------------------------------------------------

def backup(dest, label, status="complete", when="2026-01-01T00:00:00Z", **facts):
    """A tar backup whose start LSN grows with ``when``: retention orders by the LSN its copy's label agrees on."""
    (dest / label).mkdir(parents=True)
    n = int("".join(c for c in when if c.isdigit()))
    start = "%X/%X" % (n >> 32, n & 0xFFFFFFFF)
    label_text = ("START WAL LOCATION: %s (file 000000010000000000000002)\n" % start).encode()
    with tarfile.open(str(dest / label / "base.tar"), "w") as tar:
        info = tarfile.TarInfo("backup_label")
        info.size = len(label_text)
        tar.addfile(info, io.BytesIO(label_text))
    (dest / label / "backup.json").write_text(json.dumps(dict(facts, label=label, status=status, start_lsn=start)))


def test_retention_leaves_other_clusters_alone(tmp_path):
    """Two clusters share one dest: retention of one never removes the other's backups."""
    dest = tmp_path / "dest"
    ours = dict(system_identifier="111", data_directory="/pg/a", host="db1")
    theirs = dict(system_identifier="222", data_directory="/pg/b", host="db2")
    for day in (1, 2, 3):
        backup(dest, "a%d" % day, when="2026-01-0%dT00:00:00Z" % day, **ours)
        backup(dest, "b%d" % day, when="2026-01-0%dT01:00:00Z" % day, **theirs)
    result = run_module("pg_backup_retention", tmp_path, dest=str(dest), keep=2, current="a3",
                        system_identifier="111", data_directory="/pg/a", host="db1")
    assert not result.get("failed"), result
    assert result["removed"] == ["a1"] and result["kept"] == ["a2", "a3"]
    assert result["other_clusters"] == ["b1", "b2", "b3"]
    assert sorted(os.listdir(dest)) == ["a2", "a3", "b1", "b2", "b3"]


def test_retention_compares_data_directory_and_host_when_given(tmp_path):
    dest = tmp_path / "dest"
    backup(dest, "here-old", when="2026-01-01T00:00:00Z", system_identifier="111", data_directory="/pg/a", host="db1")
    backup(dest, "here-new", when="2026-01-03T00:00:00Z", system_identifier="111", data_directory="/pg/a", host="db1")
    # A restored copy of the same cluster (same system identifier) elsewhere.
    backup(dest, "copy-old", when="2026-01-02T00:00:00Z", system_identifier="111", data_directory="/pg/a", host="db9")
    result = run_module("pg_backup_retention", tmp_path, dest=str(dest), keep=1, current="here-new",
                        system_identifier="111", data_directory="/pg/a", host="db1")
    assert result["removed"] == ["here-old"] and result["other_clusters"] == ["copy-old"]


def test_retention_never_removes_unidentified_failed_running_or_current(tmp_path):
    dest = tmp_path / "dest"
    ours = dict(system_identifier="111")
    backup(dest, "older-format", when="2020-01-01T00:00:00Z")
    backup(dest, "failed", status="failed", when="2020-01-02T00:00:00Z", **ours)
    (dest / "running").mkdir()
    backup(dest, "current", when="2020-01-03T00:00:00Z", **ours)   # finished_at older than the rest
    # Claims a start after the backup just taken: no real backup can, so it is neither counted nor removed.
    backup(dest, "newest", when="2026-01-01T00:00:00Z", **ours)
    result = run_module("pg_backup_retention", tmp_path, dest=str(dest), keep=1, current="current",
                        system_identifier="111")
    assert result["removed"] == [] and result["kept"] == ["current"] and result["unproved"] == ["newest"]
    assert result["unidentified"] == ["older-format"] and result["failed_backups"] == ["failed"]
    assert sorted(os.listdir(dest)) == ["current", "failed", "newest", "older-format", "running"]


def test_retention_needs_the_cluster_and_a_sane_keep(tmp_path):
    dest = tmp_path / "dest"
    backup(dest, "a", system_identifier="111")
    missing = run_module("pg_backup_retention", tmp_path, dest=str(dest), keep=1, current="a")
    assert missing["failed"] and "system_identifier" in missing["msg"]
    negative = run_module("pg_backup_retention", tmp_path, dest=str(dest), keep=-1, current="a",
                          system_identifier="111")
    assert negative["failed"] and "keep is -1" in negative["msg"]
    assert os.listdir(dest) == ["a"]
