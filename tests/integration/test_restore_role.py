"""The restore engine (pg_backup_restore, the restore role, playbooks/restore.yml) against real servers, every major.

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
        h.proofs = make_dir(root / "proofs")
        # The plain backup without its manifest: nothing proves its files.
        h.no_manifest = linked_copy(h.plain_dir, h.proofs / "no-manifest")
        (h.no_manifest / "backup_manifest").unlink()
        # A record naming another cluster than the copy's own pg_control.
        h.other_cluster = linked_copy(h.plain_dir, h.proofs / "other-cluster")
        rewrite_record(h.other_cluster, system_identifier="7000000000000000001")
        # A dest of the plain backup and a planted record dated 2099 that starts before it (the tar backup's start).
        h.planted_dest = make_dir(root / "planted-dest")
        linked_copy(h.plain_dir, h.planted_dest / h.plain_dir.name)
        plant(h.planted_dest / "zz-planted-2099", dict(h.record, label="zz-planted-2099"))
        # A dest whose planted record claims a later start than any real backup.
        h.forged_dest = make_dir(root / "forged-dest")
        linked_copy(h.plain_dir, h.forged_dest / h.plain_dir.name)
        h.forged = plant(h.forged_dest / "zz-forged", dict(h.record, label="zz-forged", start_lsn="F/28"))
        h.same_host_forced = make_dir(root / "same-host-forced")
        (h.same_host_forced / "old file").write_text("the old directory")
        h.live_wal = Path(os.path.realpath(live.data_dir / "pg_wal"))
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
            "no_manifest": dict(backup_dir=str(h.no_manifest)),
            "no_manifest_unverified": dict(backup_dir=str(h.no_manifest), verify=False),
            "other_cluster": dict(backup_dir=str(h.other_cluster)),
            "planted_2099": dict(backup_dir=None, dest=str(h.planted_dest)),
            "planted_later_lsn": dict(backup_dir=None, dest=str(h.forged_dest)),
            # The same host, the live server running: no tablespace mapping, without and with force.
            "same_host": dict(tablespace_mapping=None),
            "same_host_force": dict(tablespace_mapping=None, force=True, data=h.same_host_forced),
            "onto_live_tablespace": dict(tablespace_mapping={h.ts_oid: str(ts_location)}, force=True),
            "onto_live_wal": dict(waldir=str(h.live_wal), force=True),
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
            tasks.append(task("pg_backup_restore", **params))
        h.ts_before = tree_listing(h.ts_live)
        h.live_before = live_paths(h)
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


def linked_copy(backup_dir, target):
    """A copy of a backup directory by hard links (fast); its backup.json is a file of its own."""
    shutil.copytree(backup_dir, target, symlinks=True, copy_function=os.link)
    record = target / "backup.json"
    text = record.read_text()
    record.unlink()
    record.write_text(text)
    return target


def rewrite_record(backup_dir, **changes):
    record = json.loads((backup_dir / "backup.json").read_text())
    (backup_dir / "backup.json").write_text(json.dumps(dict(record, **changes)))


def plant(backup_dir, record):
    """A backup.json alone, finished in 2099: what a writer of the destination can plant."""
    backup_dir.mkdir()
    (backup_dir / "backup.json").write_text(json.dumps(dict(record, finished_at="2099-01-01T00:00:00Z")))
    return backup_dir


def live_paths(h):
    """inode, owner, mode of the live server's data directory, pg_wal target and tablespace, and the tablespace's files."""
    found = {}
    for path in (h.live.data_dir, h.live_wal, Path(h.ts_live)):
        info = os.stat(path)
        found[str(path)] = (info.st_ino, info.st_uid, info.st_gid, info.st_mode)
    found["ts files"] = tree_listing(h.ts_live)
    return found


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
    assert set(result["durations"]) == {"choose", "prove", "list_wal", "check_targets", "lay_out", "configure", "recover", "report"}
    assert result["verified"] is True
    verified = result["verification"]
    if verified["method"] == "manifest":
        # A tar backup: pg_verifybackup reads one from 18 on, when its build has zstd (the test bed's 18 has not);
        # the collection's own reader checks every file against the manifest instead.
        assert verified["files"] > 100 and verified["bytes"] > 0, verified
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
    assert result["verification"]["method"] == ("pg_verifybackup" if tool.exists() else "manifest")
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
    assert result.get("failed") and "is the data directory %s of the running server PID %d" % (
        os.path.realpath(history.live.data_dir), history.live.pid) in result["msg"], result["msg"]
    assert "force cannot help" in result["msg"] and result["phase"] == "check_targets"


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
    # pg_verifybackup 18 with zstd, or the collection's own reader, names a file the manifest lists.
    assert result.get("failed") and f"pg_tblspc/{history.ts_oid}/" in result["msg"], result.get("msg")
    assert result["phase"] == "prove"
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


def test_a_backup_without_a_manifest_is_refused_unless_verify_is_off(history):
    result = history.results["no_manifest"]
    assert result.get("failed") and "has no backup_manifest: nothing proves its files" in result["msg"], result["msg"]
    assert result["phase"] == "prove" and "verify: false" in result["msg"]
    assert not (history.root / "restored-no_manifest").exists(), "refused before anything was laid out"
    result = ok(history, "no_manifest_unverified")
    assert result["verified"] is False and result["verification"]["method"] == "none", result["verification"]
    assert history.rows["no_manifest_unverified"]["ids"] == BEFORE


def test_a_record_naming_another_cluster_than_the_copys_pg_control_is_refused(history):
    result = history.results["other_cluster"]
    assert result.get("failed") and (
        "is a copy of the cluster %s (its own global/pg_control), not of 7000000000000000001, which its backup.json "
        "names" % history.record["system_identifier"]) in result["msg"], result["msg"]
    assert result["phase"] == "prove"
    assert not (history.root / "restored-other_cluster").exists(), "refused before anything was laid out"


def test_a_planted_record_dated_2099_is_not_chosen(history):
    """Newest is by start LSN: the planted record (dated 2099, an older start) loses to the real backup."""
    result = ok(history, "planted_2099")
    assert result["backup_dir"] == str(history.planted_dest / history.plain_dir.name)
    assert history.rows["planted_2099"]["ids"] == BEFORE


def test_a_planted_record_claiming_a_later_start_is_refused_by_name(history):
    result = history.results["planted_later_lsn"]
    assert result.get("failed") and f"The backup {history.forged} is not what its backup.json claims: its copy holds " \
        "no backup_label. Nothing was restored." in result["msg"], result["msg"]
    assert result["phase"] == "prove" and result["disagreement"] == "its copy holds no backup_label"
    assert not (history.root / "restored-planted_later_lsn").exists()


def test_retention_never_deletes_the_real_newest_for_a_planted_record(history, tmp_path):
    dest = make_dir(tmp_path / "dest")
    older = linked_copy(history.backup_dir, dest / history.backup_dir.name)
    newest = linked_copy(history.plain_dir, dest / history.plain_dir.name)
    planted = plant(dest / "zz-planted-2099", dict(history.record, label="zz-planted-2099"))
    forged = plant(dest / "zz-forged", dict(history.record, label="zz-forged", start_lsn="F/28"))
    before = tree_listing(newest)
    result = run_tasks([task("pg_backup_retention", dest=str(dest), keep=1, current="another-run",
                             system_identifier=history.record["system_identifier"])])[0]
    assert not result.get("failed"), result.get("msg")
    assert result["kept"] == [newest.name] and result["removed"] == [older.name], result
    assert result["unproved"] == ["zz-forged", "zz-planted-2099"], "left alone, never counted"
    assert tree_listing(newest) == before and not older.exists()
    assert (planted / "backup.json").exists() and (forged / "backup.json").exists()


def test_same_host_without_a_mapping_puts_the_tablespace_beside_the_new_data_directory(history):
    for case, data in (("same_host", history.root / "restored-same_host" / "data"),
                       ("same_host_force", history.same_host_forced)):
        result = ok(history, case)
        where = f"{data}.tablespaces/{history.ts_oid}"
        assert result["tablespaces"] == {history.ts_oid: where}, case
        assert history.rows[case]["ts_location"] == where and history.rows[case]["ids"] == BEFORE, case
        assert os.listdir(where), case
    aside = Path(history.results["same_host_force"]["set_aside"]["data_directory"])
    assert (aside / "old file").read_text() == "the old directory"
    assert set(history.results["same_host_force"]["set_aside"]) == {"data_directory"}, "nothing of the live server"


@pytest.mark.parametrize("case, what, used", [("onto_live_tablespace", "tablespace {oid} target", "tablespace {oid}"),
                                              ("onto_live_wal", "waldir", "pg_wal")])
def test_force_onto_a_live_servers_path_is_refused_naming_the_server(history, case, what, used):
    result = history.results[case]
    path = {"onto_live_tablespace": os.path.realpath(history.ts_live), "onto_live_wal": str(history.live_wal)}[case]
    assert result.get("failed") and "is the %s %s of the running server PID %d (data directory %s)" % (
        used.format(oid=history.ts_oid), path, history.live.pid, os.path.realpath(history.live.data_dir)) in result["msg"], \
        result["msg"]
    assert result["msg"].startswith("The " + what.format(oid=history.ts_oid))
    assert "force cannot help" in result["msg"] and result["phase"] == "check_targets"
    assert not (history.root / f"restored-{case}").exists(), "refused before anything was laid out or set aside"


def test_zz_the_live_server_keeps_its_paths_and_rows_after_a_crash_restart(history):
    """Last of this module: every restore beside it left the live server's paths as they were, and its rows."""
    live = history.live
    assert live_paths(history) == history.live_before
    assert not [n for n in os.listdir(live.root) if ".pgx-aside-" in n], "nothing of the live server was set aside"
    live.stop(mode="immediate")
    live.start()
    assert live.value("SELECT count(*) FROM t", dbname=history.db) == len(BEFORE | BATCH1 | BATCH2)
    assert live_paths(history) == history.live_before
