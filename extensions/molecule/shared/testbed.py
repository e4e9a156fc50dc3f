"""Test bed glue for the Molecule scenarios: a real server per scenario, restores for verifiers.

    python testbed.py create STATE_DIR MAJOR [--tablespace] [--break-archiving] [--other-backup LABEL]
    python testbed.py write STATE_DIR PHASE ROWS       # commit ROWS rows marked PHASE into demo.t
    python testbed.py restore-check STATE_DIR BACKUP_DIR   # restore with recovery_target immediate, print JSON
    python testbed.py history STATE_DIR ROWS   # batch 1, a moment, batch 2, archived; print the moment as JSON
    python testbed.py rows STATE_DIR [--restored]   # rows of demo.t by phase, of the server or the restored one
    python testbed.py destroy STATE_DIR

STATE_DIR/state.json tells the converge playbook how to reach the server, and
where a restore by the role goes (``restored``: its directory, socket and port).
Every server is stopped by its PID on destroy, the role's restored one too (the
restore check's right after the check).
"""

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / "tests"))

from testbed import Cluster, provide  # noqa: E402
from testbed.cluster import _running  # noqa: E402
from testbed.osuser import chown_postgres  # noqa: E402


def load(state_dir, restored=False):
    state = json.loads((state_dir / "state.json").read_text())
    where = state["restored"] if restored else state
    cluster = Cluster(provide(state["major"]), where["root"], where["port"])
    return state, cluster


def create(args):
    state_dir = Path(args.state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    if (state_dir / "failure.txt").exists():
        (state_dir / "failure.txt").unlink()
    # Under /tmp, not in Molecule's ephemeral directory below /root: the postgres
    # OS user must reach the server's files, the backups and the restores.
    base = Path(tempfile.mkdtemp(prefix="pgx-molecule-"))
    base.chmod(0o755)
    root = base / "pg"
    cluster = Cluster.create(provide(args.major), root)
    cluster.sql("CREATE DATABASE demo")
    cluster.sql("CREATE TABLE t (id serial PRIMARY KEY, phase text NOT NULL)", dbname="demo")
    if args.tablespace:
        location = cluster.create_tablespace("molecule_ts")
        cluster.sql("CREATE TABLE in_ts (id int) TABLESPACE molecule_ts", dbname="demo")
        cluster.sql("INSERT INTO in_ts SELECT generate_series(1, 250)", dbname="demo")
    cluster.sql("INSERT INTO t (phase) SELECT 'before' FROM generate_series(1, 500)", dbname="demo")
    if args.break_archiving:
        cluster.break_archiving()
    if args.other_backup:
        cluster.start_backup(args.other_backup)
    # Where a restore by the role goes: a directory, a socket and a port of its own (Cluster's layout).
    restored = Cluster(cluster.inst, base / "restored")
    restored.socket_dir.mkdir(parents=True)
    chown_postgres(restored.socket_dir)
    state = {
        "major": args.major, "root": str(root), "port": cluster.port, "pid": cluster.pid,
        "socket_dir": str(cluster.socket_dir), "data_dir": str(cluster.data_dir),
        "archive_dir": str(cluster.archive_dir), "backup_db": cluster.backup_db, "api": cluster.api,
        "base": str(base), "dest": str(base / "backups"), "tablespace": str(location) if args.tablespace else None,
        "other_backup": args.other_backup, "bindir": str(cluster.inst.bindir),
        "restored": {"root": str(restored.root), "data_dir": str(restored.data_dir),
                     "socket_dir": str(restored.socket_dir), "port": restored.port},
    }
    (state_dir / "state.json").write_text(json.dumps(state, indent=2))
    _running.clear()   # it keeps running until destroy
    print(json.dumps(state))


def write(args):
    _state, cluster = load(Path(args.state_dir))
    cluster.sql("INSERT INTO t (phase) SELECT %s FROM generate_series(1, %s)", (args.phase, args.rows), dbname="demo")


def history(args):
    """After the backup: batch 1, a moment noted, batch 2, all archived. A restore to the moment has batch 1 only."""
    _state, cluster = load(Path(args.state_dir))
    cluster.sql("INSERT INTO t (phase) SELECT 'batch 1' FROM generate_series(1, %s)", (args.rows,), dbname="demo")
    # Apart from both batches' commit times by more than the clocks' resolution, whatever the machine.
    time.sleep(0.5)
    moment = cluster.value("SELECT clock_timestamp()::text")
    time.sleep(0.5)
    cluster.sql("INSERT INTO t (phase) SELECT 'batch 2' FROM generate_series(1, %s)", (args.rows,), dbname="demo")
    last = cluster.value("SELECT pg_walfile_name(pg_current_wal_insert_lsn())")
    cluster.sql("SELECT pg_switch_wal()")
    cluster.wait_archived(last)
    print(json.dumps({"target_time": moment}))


def rows(args):
    _state, cluster = load(Path(args.state_dir), restored=args.restored)
    print(json.dumps(dict(cluster.sql("SELECT phase, count(*) FROM t GROUP BY phase", dbname="demo"))))


def restore_check(args):
    state_dir = Path(args.state_dir)
    state, cluster = load(state_dir)
    backup = Path(args.backup_dir)
    work = Path(state["base"]) / "restore"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    copy = work / "copy"
    if (backup / "data").is_dir():
        shutil.copytree(backup / "data", copy, symlinks=True)
        tablespaces = backup / "tablespaces"
        if tablespaces.is_dir():
            lines = []
            for oid_dir in tablespaces.iterdir():
                target = work / f"ts-{oid_dir.name}"
                shutil.copytree(oid_dir, target, symlinks=True)
                lines.append(f"{oid_dir.name} {target}\n")
            (copy / "tablespace_map").write_text("".join(lines))
            subprocess.run(["chown", "-R", "postgres:postgres", str(work)], check=True)
    else:
        copy.mkdir()
        subprocess.run(["tar", "-C", str(copy), "-xf", str(next(backup.glob("base.tar*")))], check=True)
    restored = Cluster.restore(cluster.inst, copy, work / "restored", cluster.archive_dir)
    try:
        rows = dict(restored.sql("SELECT phase, count(*) FROM t GROUP BY phase", dbname="demo"))
        in_ts = restored.value("SELECT count(*) FROM in_ts", dbname="demo") if state["tablespace"] else None
        label = (restored.data_dir / "backup_label.old").read_text() if (restored.data_dir / "backup_label.old").exists() else ""
    finally:
        restored.stop(mode="immediate")
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps({"rows": rows, "in_ts": in_ts, "label_method_streamed": "BACKUP METHOD: streamed" in label}))


def destroy(args):
    state_dir = Path(args.state_dir)
    if not (state_dir / "state.json").exists():
        return
    state, cluster = load(state_dir)
    servers = [(cluster, Path(state["data_dir"]))]
    if state.get("restored"):
        servers.append((load(state_dir, restored=True)[1], Path(state["restored"]["data_dir"])))
    for server, data_dir in servers:
        pidfile = data_dir / "postmaster.pid"
        if pidfile.exists():
            server.pid = int(pidfile.read_text().split()[0])
            server.stop(mode="immediate")
    shutil.rmtree(state["base"], ignore_errors=True)
    for name in ("state.json", "failure.txt"):
        if (state_dir / name).exists():
            (state_dir / name).unlink()


def main():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("create")
    c.add_argument("state_dir")
    c.add_argument("major", type=int)
    c.add_argument("--tablespace", action="store_true")
    c.add_argument("--break-archiving", action="store_true")
    c.add_argument("--other-backup")
    w = sub.add_parser("write")
    w.add_argument("state_dir")
    w.add_argument("phase")
    w.add_argument("rows", type=int)
    r = sub.add_parser("restore-check")
    r.add_argument("state_dir")
    r.add_argument("backup_dir")
    h = sub.add_parser("history")
    h.add_argument("state_dir")
    h.add_argument("rows", type=int)
    n = sub.add_parser("rows")
    n.add_argument("state_dir")
    n.add_argument("--restored", action="store_true")
    d = sub.add_parser("destroy")
    d.add_argument("state_dir")
    args = parser.parse_args()
    {"create": create, "write": write, "restore-check": restore_check, "history": history, "rows": rows,
     "destroy": destroy}[args.command](args)


if __name__ == "__main__":
    main()
