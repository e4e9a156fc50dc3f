"""Recovery targets of the restore engine (pg_backup_restore) against real servers, every major (issue 13).

Per major, one cluster of this file's own (track_commit_timestamp on, for
exact commit times) and one tar backup taken by the exclusive_backup role;
then a history after the backup, each batch one transaction whose xid is
noted: batch 1, the restore point 'after-batch-1', batch 2 (the insert LSN
just before its commit, and its commit time, noted), batch 3 (so that a stop
just after batch 2 is reachable), all archived.

One play restores that backup in every way phase 1 checks; the rows each
restored server holds are read, and a server restored to timeline 2 gets rows
of its own, whose WAL and history file the test copies into an archive copy
(restored servers never archive). Phase 2 restores the backup again from that
copy, following timeline 2 or staying on timeline 1. Every restored server is
stopped by its PID.
"""

import json
import os
import pwd
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg2
import pytest

from restore_helpers import (
    bindir, connect_restored, insert, make_dir, restore_port, rows_of, socket_dir, stop_restored, tree_listing)
from runner import run_role, run_tasks, task
from testbed import Cluster, provide
from testbed.osuser import as_postgres, chown_postgres, open_to_postgres
from testbed.fixtures import SELECTED

from ansible_collections.pgexclusive.backup.plugins.module_utils.restore.server import acting_as, listening, running_postmaster

BEFORE = set(range(1, 101))
BATCH1 = set(range(1001, 1101))
BATCH2 = set(range(2001, 2101))
BATCH3 = set(range(3001, 3101))
TIMELINE2 = set(range(4001, 4101))
SEGMENT = re.compile(r"^[0-9A-F]{24}$")


class History:
    """A cluster, its backup, the points in time after it, and what each restore left."""


def batch(cluster, db, first, last, phase):
    """Insert one batch in one transaction; (its xid, the insert LSN just before its commit)."""
    conn = cluster.connect(dbname=db, autocommit=False)
    try:
        with conn.cursor() as cur:
            cur.execute("INSERT INTO t SELECT g, %s FROM generate_series(%s, %s) g", (phase, first, last))
            cur.execute("SELECT pg_current_xact_id()::text, pg_current_wal_insert_lsn()::text")
            xid, lsn = cur.fetchone()
        conn.commit()
        return xid, lsn
    finally:
        conn.close()


def fetch_script(root, archive):
    """A restore_command script that logs each file asked for, then copies it from ``archive``."""
    logs = make_dir(root / "fetch-log")
    chown_postgres(logs)
    script = root / "fetch.sh"
    script.write_text(f'#!/bin/sh\necho "$1" >> {logs}/fetched.log\nexec cp {archive}/"$1" "$2"\n')
    script.chmod(0o755)
    return script, logs / "fetched.log"


def peer_hba(root):
    """A pg_hba.conf admitting Unix-socket clients by peer authentication only (the OS user's own role)."""
    path = root / "peer_hba.conf"
    path.write_text("local all all peer\n")
    path.chmod(0o644)
    return path


def archived_segments(archive):
    return sorted(n for n in os.listdir(archive) if SEGMENT.match(n))


def restore_params(h, case, **args):
    sock = socket_dir(h.root / f"sock-{case}")
    params = dict(backup_dir=str(h.backup_dir), data_directory=str(h.root / f"r-{case}" / "data"),
                  bindir=bindir(h.live), wal_archive_dir=str(h.live.archive_dir),
                  settings={"port": str(restore_port()), "listen_addresses": "", "unix_socket_directories": str(sock),
                            "shared_buffers": "16MB"},
                  timeout=120)
    settings = args.pop("settings", {})
    params.update(args)
    params["settings"].update(settings)
    return {k: v for k, v in params.items() if v is not None}


def run_restores(h, cases):
    """Every case in one play; returns {case: result} and remembers each data directory to stop."""
    for case, params in cases.items():
        h.restored.append(Path(params["data_directory"]))
    open_to_postgres(h.root)
    return dict(zip(cases, run_tasks([task("pg_backup_restore", **params) for params in cases.values()], timeout=900)))


def server_state(result):
    conn = connect_restored(result)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_is_in_recovery(), pg_get_wal_replay_pause_state()")
            return cur.fetchone()
    finally:
        conn.close()


def start_again(h, data):
    """Start a restored server that shut down at its target, with its recovery settings and, appended
    last (so winning), recovery_target_action pause; (its rows, in recovery, pause state) once paused."""
    with (data / "postgresql.auto.conf").open("a") as conf:
        conf.write("recovery_target_action = 'pause'\n")
    log = socket_dir(h.root / "start-again") / "server.log"
    proc = subprocess.run(as_postgres([h.live.inst.tool("pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60",
                                       "start"]), capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr + log.read_text()
    sock, port = listening(str(data))
    where = {"socket_dir": sock, "port": port}
    deadline = time.monotonic() + 60
    while server_state(where)[1] != "paused":
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.2)
    return rows_of(where, h.db)["ids"], server_state(where), log.read_text()


def controldata(h, data):
    """pg_controldata's lines as a dict; None where the major's build has no pg_controldata (the npm 14)."""
    tool = Path(h.live.inst.tool("pg_controldata"))
    if not tool.exists():
        return None
    out = subprocess.run(as_postgres([tool, "-D", str(data)]), capture_output=True, text=True, check=True).stdout
    return dict(line.split(":", 1) for line in out.splitlines() if ":" in line)


def peer_rows(result, db):
    """The ids a peer-authenticated server holds: read as postgres with postgres's uid, as the engine connects."""
    owner = os.stat(result["data_directory"])
    with acting_as(owner):
        conn = psycopg2.connect(host=result["socket_dir"], port=result["port"], user="postgres", dbname=db)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT id FROM t")
            return {row[0] for row in cur.fetchall()}
    finally:
        conn.close()


def branch_to_timeline_2(h, result):
    """New rows on the server promoted to timeline 2; its history file and WAL copied into the archive copy."""
    conn = connect_restored(result, h.db)
    try:
        with conn.cursor() as cur:
            cur.execute("INSERT INTO t SELECT g, 'timeline 2' FROM generate_series(4001, 4100) g")
            cur.execute("SELECT pg_walfile_name(pg_current_wal_insert_lsn())")
            last = cur.fetchone()[0]
            cur.execute("SELECT pg_switch_wal()")
    finally:
        conn.close()
    data = Path(result["data_directory"])
    pg_wal = data / "pg_wal"
    # Timeline 2's segments up to the switch (complete and flushed), copied while the server runs, as an
    # archive_command would: its shutdown checkpoint recycles them (it does not archive).
    copied = [n for n in os.listdir(pg_wal)
              if n == "00000002.history" or (SEGMENT.match(n) and n.startswith("00000002") and n <= last)]
    for name in copied:
        shutil.copy(pg_wal / name, h.tl_archive / name)
    chown_postgres(h.tl_archive)
    stop_restored(data, h.live.inst)
    return sorted(copied)


@pytest.fixture(scope="module", params=SELECTED, ids=lambda m: f"pg{m}")
def history(request, testbed_dir):
    major = request.param
    started = time.monotonic()
    root = Path(tempfile.mkdtemp(prefix=f"targets-pg{major}-", dir=testbed_dir))
    root.chmod(0o755)
    live = Cluster.create(provide(major), root / "live")
    h = History()
    h.live, h.root, h.major, h.restored = live, root, major, []
    try:
        live.sql("ALTER SYSTEM SET track_commit_timestamp = on")
        live.restart()
        h.db = live.create_database()
        live.sql("CREATE TABLE t (id int PRIMARY KEY, phase text NOT NULL)", dbname=h.db)
        insert(live, h.db, 1, 100, "before")
        run = run_role(live, make_dir(root / "play"), exclusive_backup_dest=str(root / "backups"))
        assert run.rc == 0, run.output[-6000:]
        h.backup_dir = root / "backups" / run.result["label"]
        h.record = json.loads((h.backup_dir / "backup.json").read_text())
        assert h.record["status"] == "complete"
        h.xid1, _lsn = batch(live, h.db, 1001, 1100, "batch 1")
        live.sql("SELECT pg_create_restore_point('after-batch-1')")
        h.xid2, h.lsn_before_commit2 = batch(live, h.db, 2001, 2100, "batch 2")
        h.time2 = live.value("SELECT pg_xact_commit_timestamp(%s::xid)::text", (h.xid2,))
        h.xid3, _lsn = batch(live, h.db, 3001, 3100, "batch 3")
        last = live.value("SELECT pg_walfile_name(pg_current_wal_insert_lsn())")
        live.sql("SELECT pg_switch_wal()")
        live.wait_archived(last)
        h.archive_before = sorted(os.listdir(live.archive_dir))
        h.last_archived = archived_segments(live.archive_dir)[-1]

        # The archive copy the timeline cases use: the test alone writes into it.
        h.tl_archive = root / "tl-archive"
        shutil.copytree(live.archive_dir, h.tl_archive)
        chown_postgres(h.tl_archive)
        h.tl_archive_copied = tree_listing(h.tl_archive)
        # An archive without a segment the backup needs, for the refusals before anything is laid out.
        h.holey_archive = make_dir(root / "holey-archive")
        for name in os.listdir(live.archive_dir):
            if name != h.record["stop_wal_file"]:
                shutil.copy(live.archive_dir / name, h.holey_archive / name)
        chown_postgres(h.holey_archive)
        h.empty_target = make_dir(root / "empty-target")
        h.occupied = make_dir(root / "occupied")
        (h.occupied / "old file").write_text("the old directory")
        h.fetch, h.fetch_log = fetch_script(root, live.archive_dir)
        h.hba = peer_hba(root)

        cases = {
            "xid_inclusive": dict(target="xid", target_xid=h.xid2),
            "xid_exclusive": dict(target="xid", target_xid=h.xid2, target_inclusive=False),
            "time_inclusive": dict(target="time", target_time=h.time2),
            "time_exclusive": dict(target="time", target_time=h.time2, target_inclusive=False),
            "lsn_inclusive": dict(target="lsn", target_lsn=h.lsn_before_commit2),
            "lsn_exclusive": dict(target="lsn", target_lsn=h.lsn_before_commit2, target_inclusive=False),
            "pause": dict(target="name", target_name="after-batch-1", target_action="pause"),
            "shutdown": dict(target="name", target_name="after-batch-1", target_action="shutdown"),
            "restore_command": dict(target="name", target_name="after-batch-1", restore_command=f"{h.fetch} %f \"%p\"",
                                    wal_archive_dir=str(make_dir(root / "unused-archive"))),
            "peer": dict(target="immediate", timeout=60, settings={"hba_file": str(h.hba)}),
            "past_time": dict(target="time", target_time="2999-01-01 00:00:00+00"),
            "past_lsn": dict(target="lsn", target_lsn="FF/0"),
            "no_wal_empty": dict(target="immediate", data_directory=str(h.empty_target), waldir=str(root / "no-wal-wal"),
                                 wal_archive_dir=str(h.holey_archive)),
            "no_wal_forced": dict(target="immediate", data_directory=str(h.occupied), force=True,
                                  wal_archive_dir=str(h.holey_archive)),
            "promote_to_timeline_2": dict(target="name", target_name="after-batch-1", wal_archive_dir=str(h.tl_archive)),
        }
        h.results = run_restores(h, {case: restore_params(h, case, **args) for case, args in cases.items()})
        h.rows = {case: rows_of(r, h.db)["ids"] for case, r in h.results.items()
                  if r.get("running") and case != "peer"}
        h.pause_state = server_state(h.results["pause"]) if h.results["pause"].get("running") else None
        if h.results["peer"].get("running"):
            h.peer_rows = peer_rows(h.results["peer"], h.db)
            try:
                psycopg2.connect(host=h.results["peer"]["socket_dir"], port=h.results["peer"]["port"], user="postgres",
                                 dbname=h.db).close()
                h.peer_as_root = "admitted"
            except psycopg2.OperationalError as exc:
                h.peer_as_root = str(exc)
        shut = Path(h.results["shutdown"].get("data_directory") or root / "r-shutdown" / "data")
        h.shutdown_postmaster = running_postmaster(str(shut))
        h.shutdown_control = controldata(h, shut)
        h.tl_archive_after_phase1 = tree_listing(h.tl_archive)
        if h.results["promote_to_timeline_2"].get("running"):
            h.tl2_copied = branch_to_timeline_2(h, h.results["promote_to_timeline_2"])
            h.tl_archive_before_phase2 = tree_listing(h.tl_archive)
            h.results.update(run_restores(h, {
                case: restore_params(h, case, target="latest", target_timeline=timeline,
                                     wal_archive_dir=str(h.tl_archive))
                for case, timeline in (("timeline_2", "2"), ("timeline_latest", "latest"),
                                       ("timeline_current", "current"))}))
            h.tl_archive_after_phase2 = tree_listing(h.tl_archive)
            h.rows.update({case: rows_of(h.results[case], h.db)["ids"] for case in
                           ("timeline_2", "timeline_latest", "timeline_current") if h.results[case].get("running")})
        for data in h.restored:
            if data != shut:
                stop_restored(data, h.live.inst)
        try:
            h.again = start_again(h, shut)
        except AssertionError as exc:   # kept for the shutdown test; the other cases stand on their own
            h.again = exc
        stop_restored(shut, h.live.inst)
        past = [line for line in h.results["past_time"].get("msg", "").splitlines() if "FATAL" in line]
        print(f"\npg{major}: history and {len(h.results)} restores took {time.monotonic() - started:.1f}s; "
              f"a target past the archive: {past}")
        yield h
    finally:
        for data in h.restored:
            stop_restored(data, live.inst)
        live.destroy()
        shutil.rmtree(root, ignore_errors=True)


def ok(h, case):
    result = h.results[case]
    assert not result.get("failed"), result.get("msg")
    return result


@pytest.mark.parametrize("case,rows", [
    ("xid_inclusive", BEFORE | BATCH1 | BATCH2),
    ("xid_exclusive", BEFORE | BATCH1),
    ("time_inclusive", BEFORE | BATCH1 | BATCH2),
    ("time_exclusive", BEFORE | BATCH1),
    ("lsn_inclusive", BEFORE | BATCH1 | BATCH2),
    ("lsn_exclusive", BEFORE | BATCH1),
])
def test_inclusive_keeps_the_boundary_transaction_and_exclusive_stops_just_before_it(history, case, rows):
    """The same target (batch 2's xid, its exact commit time, the insert LSN just before its commit record),
    once inclusive and once not: batch 2 is the boundary."""
    result = ok(history, case)
    assert history.rows[case] == rows
    assert result["promoted"] is True and result["timeline"] == 2
    assert result["settings"]["recovery_target_inclusive"] == ("'off'" if case.endswith("exclusive") else "'on'")


def test_pause_leaves_the_server_paused_in_recovery_at_the_target(history):
    result = ok(history, "pause")
    assert (result["running"], result["paused"], result["promoted"]) == (True, True, False)
    assert history.pause_state == (True, "paused")
    assert history.rows["pause"] == BEFORE | BATCH1
    assert result["reached_lsn"] and result["timeline"] == 1


def test_shutdown_stops_the_server_at_the_target(history):
    result = ok(history, "shutdown")
    assert (result["started"], result["running"], result["promoted"]) == (True, False, False)
    assert "after-batch-1" in result["reached"], result["reached"]
    assert history.shutdown_postmaster is None, "no postmaster left"
    if history.shutdown_control is not None:
        assert history.shutdown_control["Database cluster state"].strip() == "shut down in recovery"
    if isinstance(history.again, Exception):
        raise history.again
    ids, state, log = history.again
    assert ids == BEFORE | BATCH1, "started again with its recovery settings, it stops at the same target"
    assert state == (True, "paused") and 'recovery stopping at restore point "after-batch-1"' in log


def test_a_custom_restore_command_is_used(history):
    result = ok(history, "restore_command")
    assert result["restore_command"] == f"{history.fetch} %f \"%p\""
    assert history.rows["restore_command"] == BEFORE | BATCH1
    fetched = history.fetch_log.read_text().split()
    assert history.record["stop_wal_file"] in fetched and history.record["start_wal_file"] in fetched
    assert not os.listdir(history.root / "unused-archive"), "restore_command wins over wal_archive_dir"


def test_peer_authentication_admits_the_restore_run_as_root(history):
    """The module runs as root; the restored server admits only peers as their own role. The engine asks it
    as the data directory's owner (postgres), with postgres's uid."""
    result = ok(history, "peer")
    assert os.geteuid() == 0 and pwd.getpwuid(os.stat(result["data_directory"]).st_uid).pw_name == "postgres"
    assert result["promoted"] is True and result["reached_lsn"]
    assert history.peer_rows == BEFORE
    assert "Peer authentication failed" in history.peer_as_root, "root's own connection is refused"


@pytest.mark.parametrize("case", ["past_time", "past_lsn"])
def test_a_target_past_the_last_archived_wal_is_reported(history, case):
    result = history.results[case]
    assert result.get("failed"), "PostgreSQL 14+ ends recovery when the WAL runs out before the target"
    assert "The recovery target is past the last archived WAL" in result["msg"], result["msg"]
    assert "recovery ended before configured recovery target was reached" in result["msg"], "the log's tail"
    assert result["replay_end"]["segment"] == history.last_archived, result["msg"]
    assert f"the last segment replayed was {history.last_archived}" in result["msg"]
    assert "or latest to restore everything archived" in result["msg"]


@pytest.mark.parametrize("case", ["no_wal_empty", "no_wal_forced"])
def test_a_restore_without_its_wal_changes_nothing(history, case):
    result = history.results[case]
    missing = history.record["stop_wal_file"]
    assert result.get("failed") and f"The WAL segment {missing}, which the backup needs" in result["msg"]
    assert result["missing_wal"] == missing and "Nothing was restored." in result["msg"]
    if case == "no_wal_empty":
        assert os.listdir(history.empty_target) == [], "the target is still empty"
        assert not (history.root / "no-wal-wal").exists()
    else:
        assert os.listdir(history.occupied) == ["old file"], "not set aside, not written"
        assert not [n for n in os.listdir(history.root) if ".pgx-aside-" in n]
        assert "set_aside" not in result


def test_restoring_again_follows_timeline_2_or_stays_on_timeline_1(history):
    ok(history, "promote_to_timeline_2")
    assert history.rows["promote_to_timeline_2"] == BEFORE | BATCH1
    assert "00000002.history" in history.tl2_copied and len(history.tl2_copied) >= 2, history.tl2_copied
    assert history.tl_archive_after_phase1 == history.tl_archive_copied, "the restore wrote into its archive"
    for case in ("timeline_2", "timeline_latest"):
        result = ok(history, case)
        assert history.rows[case] == BEFORE | BATCH1 | TIMELINE2, case
        assert result["timeline"] == 3, "promoted after timeline 2"
    ok(history, "timeline_current")
    assert history.rows["timeline_current"] == BEFORE | BATCH1 | BATCH2 | BATCH3
    assert history.tl_archive_after_phase2 == history.tl_archive_before_phase2, "the restores wrote into the archive"


def test_the_live_server_and_its_archive_are_untouched(history):
    live = history.live
    assert live.value("SELECT count(*) FROM t", dbname=history.db) == len(BEFORE | BATCH1 | BATCH2 | BATCH3)
    archive = sorted(os.listdir(live.archive_dir))
    assert not [n for n in archive if not n.startswith("00000001")], "a restored server wrote into the archive"
    assert archive[:len(history.archive_before)] == history.archive_before
