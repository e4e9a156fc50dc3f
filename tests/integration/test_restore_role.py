"""The restore engine (pg_restore, the restore role, playbooks/restore.yml) against real servers, every major.

Per major, one cluster of this file's own (pg_wal outside the data directory,
a table in a tablespace) and one tar+zstd backup taken by the exclusive_backup
role; then a history after the backup: batch 1 committed, a restore point, an
LSN and a time noted, batch 2 committed, all archived. One playbook run then
restores that backup in every way the tests check (each into a directory of
its own, beside the live server, on a port and socket of its own); the rows
each restored server holds are read, and every restored server is stopped by
its PID. The tests assert on those results and on the live server afterwards.
"""

import json
import os
import pwd
import shutil
import tempfile
import time
from pathlib import Path

import pytest

from restore_helpers import insert, make_dir, rows_of, stop_restored, tree_listing
from runner import REPO, ROLE_ENV, ansible_env, localhost_inventory, run_dir, run_playbook, run_role, run_tasks, task
from testbed import Cluster, provide
from testbed.osuser import chown_postgres, open_to_postgres
from testbed.fixtures import SELECTED

BEFORE = set(range(1, 101))
BATCH1 = set(range(1001, 1101))
BATCH2 = set(range(2001, 2101))


class History:
    """A cluster, its backup, and the points in time after it."""


@pytest.fixture(scope="module", params=SELECTED, ids=lambda m: f"pg{m}")
def history(request, testbed_dir):
    major = request.param
    root = Path(tempfile.mkdtemp(prefix=f"restore-pg{major}-", dir=testbed_dir))
    root.chmod(0o755)
    live = Cluster.create(provide(major), root / "live", waldir=True)
    h = History()
    h.live, h.root, h.major = live, root, major
    restored_dirs = []
    try:
        ts_location = live.create_tablespace("ts")
        h.db = live.create_database()
        live.sql("CREATE TABLE t (id int PRIMARY KEY, phase text NOT NULL) TABLESPACE ts", dbname=h.db)
        insert(live, h.db, 1, 100, "before")
        scratch = make_dir(root / "play")
        run = run_role(live, scratch, exclusive_backup_dest=str(root / "backups"), exclusive_backup_compression="zstd")
        assert run.rc == 0, run.output[-6000:]
        h.backup_dir = root / "backups" / run.result["label"]
        h.record = json.loads((h.backup_dir / "backup.json").read_text())
        assert h.record["status"] == "complete" and (h.backup_dir / "base.tar.zst").exists()
        # A plain copy with its WAL included: restored without the archive.
        run = run_role(live, scratch, exclusive_backup_dest=str(root / "backups"), exclusive_backup_method="copy",
                       exclusive_backup_include_wal=True, exclusive_backup_wal_archive_dir=str(live.archive_dir))
        assert run.rc == 0, run.output[-6000:]
        h.plain_dir = root / "backups" / run.result["label"]
        assert (h.plain_dir / "data" / "backup_label").exists()
        insert(live, h.db, 1001, 1100, "batch 1")
        live.sql("SELECT pg_create_restore_point('after-batch-1')")
        h.mid_lsn = live.value("SELECT pg_current_wal_insert_lsn()::text")
        time.sleep(1.2)
        h.mid_time = live.value("SELECT clock_timestamp()::text")
        time.sleep(1.2)
        insert(live, h.db, 2001, 2100, "batch 2")
        last = live.value("SELECT pg_walfile_name(pg_current_wal_insert_lsn())")
        live.sql("SELECT pg_switch_wal()")
        live.wait_archived(last)
        h.archive_before = sorted(os.listdir(live.archive_dir))
        h.ts_oid = str(live.value("SELECT oid FROM pg_tablespace WHERE spcname = 'ts'"))
        h.ts_live = ts_location

        # An archive without one segment the backup needs, for the missing-WAL case.
        h.holey_archive = make_dir(root / "holey-archive")
        for name in os.listdir(live.archive_dir):
            if name != h.record["stop_wal_file"]:
                shutil.copy(live.archive_dir / name, h.holey_archive / name)
        # A tar backup that lost its tablespace's archive.
        h.damaged = root / "damaged-backup"
        shutil.copytree(h.backup_dir, h.damaged)
        (h.damaged / f"{h.ts_oid}.tar.zst").unlink()
        h.occupied = make_dir(root / "occupied")
        (h.occupied / "someone's file").write_text("keep me")
        h.forced = make_dir(root / "forced")
        (h.forced / "old file").write_text("the old directory")

        targets = {
            "immediate": dict(target="immediate"),
            "latest": dict(target="latest"),
            "time": dict(target="time", target_time=h.mid_time),
            "name": dict(target="name", target_name="after-batch-1"),
            "lsn": dict(target="lsn", target_lsn=h.mid_lsn),
            "waldir": dict(target="immediate", waldir=str(root / "restored-wal")),
            "forced": dict(target="immediate", force=True, data=h.forced),
            "running": dict(target="immediate", data=live.data_dir, force=True),
            "occupied": dict(target="immediate", data=h.occupied),
            "before_end": dict(target="lsn", target_lsn=h.record["start_lsn"]),
            "missing_wal": dict(target="immediate", wal_archive_dir=str(h.holey_archive)),
            "damaged": dict(target="immediate", backup_dir=str(h.damaged)),
            "plain_included_wal": dict(target="immediate", backup_dir=str(h.plain_dir), wal_archive_dir=None),
        }
        tasks = []
        for case, args in targets.items():
            data = args.pop("data", None) or root / f"restored-{case}" / "data"
            sock = make_dir(root / f"sock-{case}")
            chown_postgres(sock)
            params = dict(
                backup_dir=str(h.backup_dir), data_directory=str(data), bindir=str(Path(live.inst.tool("pg_ctl")).parent),
                wal_archive_dir=str(live.archive_dir),
                tablespace_mapping={h.ts_oid: str(root / f"restored-{case}" / "ts")},
                settings={"port": str(_free_port()), "listen_addresses": "", "unix_socket_directories": str(sock),
                          "shared_buffers": "16MB"},
                timeout=180)
            params.update(args)
            params = {k: v for k, v in params.items() if v is not None}
            if case not in ("running",):
                restored_dirs.append(Path(params["data_directory"]))
            tasks.append(task("pg_restore", **params))
        h.ts_before = tree_listing(h.ts_live)
        open_to_postgres(root)
        results = run_tasks(tasks)
        h.results = dict(zip(targets, results))
        h.rows = {}
        for case, result in h.results.items():
            if result.get("running"):
                h.rows[case] = rows_of(result, h.db)
        for data in restored_dirs:
            stop_restored(data, live.inst)
        yield h
    finally:
        for data in restored_dirs:
            stop_restored(data, live.inst)
        live.destroy()
        shutil.rmtree(root, ignore_errors=True)


def _free_port():
    from testbed import free_port
    return free_port()


def ok(h, case):
    result = h.results[case]
    assert not result.get("failed"), result.get("msg")
    return result


def test_immediate_holds_the_rows_committed_before_the_backup(history):
    result = ok(history, "immediate")
    assert history.rows["immediate"]["ids"] == BEFORE
    assert result["promoted"] is True and result["timeline"] == 2
    assert result["label_fixed"] is False, "the role's copy already carries the 15+ label fix"
    assert set(result["durations"]) == {"choose", "prove", "check_targets", "lay_out", "configure", "recover", "report"}
    verified = result["verified"]
    if verified["method"] == "file list":
        # A tar backup: pg_verifybackup reads one from 18 on, when its build has zstd (the test bed's 18 has not).
        assert verified["outputs"] == history.record["outputs"]
        assert verified["sizes_checked"] == sorted(history.record["output_bytes"]) == sorted(history.record["outputs"])
        has_tool = (Path(history.live.inst.tool("pg_ctl")).parent / "pg_verifybackup").exists()
        expected = ("no pg_verifybackup at hand" if not has_tool else "reads tar backups from 18 on" if history.major < 18
                    else "does not support compression with ZSTD")
        assert expected in verified["reason"], verified
    else:
        assert history.major >= 18 and " -F t -n " in verified["command"], verified


def test_latest_replays_every_archived_commit(history):
    ok(history, "latest")
    assert history.rows["latest"]["ids"] == BEFORE | BATCH1 | BATCH2


@pytest.mark.parametrize("case", ["time", "name", "lsn"])
def test_point_in_time_between_the_two_batches(history, case):
    result = ok(history, case)
    assert history.rows[case]["ids"] == BEFORE | BATCH1, case
    assert result["promoted"] is True
    assert result["reached_lsn"]


def test_tablespace_remapped_and_archiving_off(history):
    result = ok(history, "immediate")
    new = str(history.root / "restored-immediate" / "ts")
    assert result["tablespaces"] == {history.ts_oid: new}
    assert history.rows["immediate"]["ts_location"] == new
    assert history.rows["immediate"]["archive_mode"] == "off"
    assert (Path(new) / os.listdir(new)[0]).is_dir()
    assert (history.root / "restored-immediate" / "data" / "backup_label.old").exists() or \
        not (history.root / "restored-immediate" / "data" / "backup_label").exists()


def test_plain_backup_restores_from_its_own_wal_owned_by_postgres(history):
    result = ok(history, "plain_included_wal")
    assert result["restore_command"] == "false", "no archive: the WAL comes from the backup"
    tool = Path(history.live.inst.tool("pg_verifybackup"))
    assert result["verified"]["method"] == ("pg_verifybackup" if tool.exists() else "file list")
    assert history.rows["plain_included_wal"]["ids"] == BEFORE
    data = history.root / "restored-plain_included_wal" / "data"
    postgres = pwd.getpwnam("postgres")
    for path in (data, history.root / "restored-plain_included_wal" / "ts"):
        info = path.stat()
        assert (info.st_uid, info.st_gid, info.st_mode & 0o777) == (postgres.pw_uid, postgres.pw_gid, 0o700), path
    assert history.rows["plain_included_wal"]["ts_location"] == str(history.root / "restored-plain_included_wal" / "ts")


def test_pg_wal_elsewhere_is_linked(history):
    result = ok(history, "waldir")
    wal = history.root / "restored-wal"
    pg_wal = history.root / "restored-waldir" / "data" / "pg_wal"
    assert pg_wal.is_symlink() and os.readlink(pg_wal) == str(wal)
    assert result["waldir"] == str(wal)
    assert any(name.startswith("00000002") for name in os.listdir(wal)), "the restored server writes its WAL there"
    assert history.rows["waldir"]["ids"] == BEFORE


def test_a_running_target_is_refused_even_with_force(history):
    result = history.results["running"]
    assert result.get("failed") and "A postmaster (PID %d) runs" % history.live.pid in result["msg"]


def test_a_non_empty_target_is_refused_without_force(history):
    result = history.results["occupied"]
    assert result.get("failed") and "is not empty" in result["msg"] and "force" in result["msg"]
    assert os.listdir(history.occupied) == ["someone's file"]


def test_force_sets_the_old_directory_aside(history):
    result = ok(history, "forced")
    aside = Path(result["set_aside"]["data_directory"])
    assert aside.name.startswith("forced.pgx-aside-")
    assert (aside / "old file").read_text() == "the old directory"
    assert history.rows["forced"]["ids"] == BEFORE


def test_a_target_before_the_backups_end_is_refused(history):
    result = history.results["before_end"]
    assert result.get("failed") and "cannot be reached from this backup" in result["msg"], result.get("msg")
    assert "before the backup's stop LSN" in result["msg"]
    assert not (history.root / "restored-before_end").exists(), "nothing was laid out"


def test_a_damaged_backup_is_refused_before_anything_is_restored(history):
    result = history.results["damaged"]
    # pg_verifybackup 18 with zstd names the files the manifest lists; the file list names the archive.
    assert result.get("failed") and (f"lacks {history.ts_oid}.tar.zst, which its backup.json lists" in result["msg"] or
                                     f'"pg_tblspc/{history.ts_oid}/' in result["msg"]), result.get("msg")
    assert not (history.root / "restored-damaged").exists()


def test_a_missing_wal_segment_is_named(history):
    result = history.results["missing_wal"]
    missing = history.record["stop_wal_file"]
    assert result.get("failed") and f"The WAL segment {missing}" in result["msg"], result.get("msg")
    assert result["missing_wal"] == missing
    assert result["data_directory"] == str(history.root / "restored-missing_wal" / "data"), "where the restore went"
    assert not (history.root / "restored-missing_wal").exists(), "refused before anything was laid out"


def test_the_live_server_is_untouched(history):
    live = history.live
    assert not live.in_backup() and not (live.data_dir / "backup_label").exists()
    assert live.value("SELECT count(*) FROM t", dbname=history.db) == len(BEFORE | BATCH1 | BATCH2)
    archive = sorted(os.listdir(live.archive_dir))
    assert not [n for n in archive if n.startswith("00000002")], "a restored server wrote into the archive"
    assert archive[:len(history.archive_before)] == history.archive_before
    assert tree_listing(history.ts_live) == history.ts_before, "a restore wrote into the live tablespace"
    assert (live.data_dir / "pg_wal").is_symlink()


def test_the_role_and_playbook_restore_the_latest_backup_of_dest(history, tmp_path):
    """playbooks/restore.yml with restore_dest: the newest complete backup of the cluster, to a restore point."""
    root, live = history.root, history.live
    sock = make_dir(root / "sock-role")
    chown_postgres(sock)
    data = root / "restored-role" / "data"
    variables = {
        "restore_hosts": "localhost",
        "restore_dest": str(root / "backups"),
        "restore_system_identifier": history.record["system_identifier"],
        "restore_data_directory": str(data),
        "restore_target": "name",
        "restore_target_name": "after-batch-1",
        "restore_wal_archive_dir": str(live.archive_dir),
        "restore_tablespace_mapping": {history.ts_oid: str(root / "restored-role" / "ts")},
        "restore_settings": {"port": str(_free_port()), "listen_addresses": "", "unix_socket_directories": str(sock)},
        "restore_bindir": str(Path(live.inst.tool("pg_ctl")).parent),
        "restore_timeout": 180,
    }
    vars_file = tmp_path / "vars.json"
    vars_file.write_text(json.dumps(variables))
    inventory = localhost_inventory(tmp_path / "inventory.yml")
    try:
        run = run_playbook(REPO / "playbooks" / "restore.yml", inventory, run_dir(tmp_path, "restore"),
                           args=("-e", f"@{vars_file}"), env=ansible_env(**ROLE_ENV))
        assert run.rc == 0, run.output[-6000:]
        assert f"Restoring {history.plain_dir}" in run.output, "the newest complete backup of the cluster"
        assert "promoted" in run.output
        assert rows_of(dict(socket_dir=str(sock), port=int(variables["restore_settings"]["port"])),
                       history.db)["ids"] == BEFORE | BATCH1
    finally:
        stop_restored(data, live.inst)
