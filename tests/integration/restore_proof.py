"""What proves a backup good: it restored, with exactly the rows committed before its stop.

The pattern every test that proves a restore follows:

    create_table(pg, db)                      # table t: rows 1..BASE_ROWS, committed before the backup
    with Writer(pg, db) as writer:            # commits one row at a time during the backup
        run = run_role(...)
    add_rows_after(pg, db)                    # rows 900001..: committed after the run
    restored, _seconds = restore_backup(pg, backup_dir, scratch / "restore", restore)
    check_restored_rows(restored, db, writer, record["stop_lsn"])

``restore`` is the test bed's fixture: it starts the copy with
recovery_target = 'immediate', replaying from the cluster's WAL archive.
"""

import subprocess
import threading
import time
from pathlib import Path

from testbed.osuser import OS_USER

BASE_ROWS = 1000
AFTER = 900000


def create_table(cluster, dbname, rows=BASE_ROWS):
    cluster.sql("CREATE TABLE t (id int PRIMARY KEY, phase text NOT NULL)", dbname=dbname)
    cluster.sql(f"INSERT INTO t SELECT g, 'before' FROM generate_series(1, {rows}) g", dbname=dbname)


def add_rows_after(cluster, dbname):
    """Rows committed after the run: a restore to the backup's end must not hold any of them."""
    cluster.sql(f"INSERT INTO t SELECT g, 'after' FROM generate_series({AFTER + 1}, {AFTER + 100}) g", dbname=dbname)


class Writer:
    """Commits one row at a time in a thread, noting the WAL insert position around each commit.

    After a restore to the backup's end (stop_lsn), a row whose commit ended
    before stop_lsn must be there and a row begun after it must not.
    """

    def __init__(self, cluster, dbname, table="t"):
        self.cluster, self.dbname, self.table = cluster, dbname, table
        self.rows = []          # (id, lsn before, lsn after)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.error = None

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(30)

    def _run(self):
        conn = self.cluster.connect(self.dbname)
        try:
            with conn.cursor() as cur:
                next_id = 100000
                while not self._stop.is_set():
                    next_id += 1
                    cur.execute("SELECT pg_current_wal_insert_lsn()::text")
                    before = cur.fetchone()[0]
                    cur.execute(f"INSERT INTO {self.table} VALUES (%s, 'concurrent')", (next_id,))
                    cur.execute("SELECT pg_current_wal_insert_lsn()::text")
                    self.rows.append((next_id, before, cur.fetchone()[0]))
                    time.sleep(0.005)
        except Exception as exc:   # noqa: BLE001 - reported by the test
            self.error = exc
        finally:
            conn.close()


def lsn(text):
    high, low = text.split("/")
    return (int(high, 16) << 32) | int(low, 16)


def restored_ids(restored, dbname):
    return [row[0] for row in restored.sql("SELECT id FROM t", dbname=dbname)]


def check_rows_against_stop(writer, restored_ids, stop_lsn):
    """Rows committed before stop_lsn are in, rows begun after it are not; returns (in, out) counts."""
    stop = lsn(stop_lsn)
    must_in = [i for i, _b, after in writer.rows if lsn(after) <= stop]
    must_out = [i for i, before, _a in writer.rows if lsn(before) >= stop]
    missing = sorted(set(must_in) - set(restored_ids))
    extra = sorted(set(must_out) & set(restored_ids))
    assert not missing, f"rows committed before the stop are missing: {missing[:10]}"
    assert not extra, f"rows written after the stop are present: {extra[:10]}"
    return len(must_in), len(must_out)


def check_restored_rows(restored, dbname, writer, stop_lsn, what="the restored copy"):
    """The whole proof on a restored copy: the rows from before the backup, the writer's rows against the
    stop, none of the rows from after the run; the writer must have committed during the backup."""
    ids = restored_ids(restored, dbname)
    assert set(range(1, BASE_ROWS + 1)) <= set(ids), f"{what}: rows from before the backup are missing"
    assert not any(i > AFTER for i in ids), f"{what}: rows from after the run are there"
    must_in, must_out = check_rows_against_stop(writer, ids, stop_lsn)
    assert must_in > 0, f"{what}: the writer committed nothing during the backup"
    return must_in, must_out


# -- from a backup directory to a started copy -------------------------------------------------------

def extract(archive, target):
    """A tar archive into ``target``; GNU tar finds the compression (gzip, zstd) itself."""
    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    subprocess.run(["tar", "-C", str(target), "-xf", str(archive)], check=True)
    return target


def base_tar(backup_dir):
    found = sorted(Path(backup_dir).glob("base.tar*"))
    return found[0] if found else None


def materialize(backup_dir, where):
    """Lay a tar or plain backup out under ``where`` for Cluster.restore: (copy dir, {oid: tablespace dir}).

    Tablespaces go to directories of their own, named in the copy's
    tablespace_map; WAL the backup includes goes into the copy's pg_wal (made
    a real directory first, so nothing is ever written through a link).
    """
    backup_dir, where = Path(backup_dir), Path(where)
    where.mkdir(parents=True, exist_ok=True)
    copy = where / "copy"
    tablespaces = {}
    if (backup_dir / "data").is_dir():
        subprocess.run(["cp", "-a", str(backup_dir / "data"), str(copy)], check=True)
        for ts in sorted((backup_dir / "tablespaces").glob("*")) if (backup_dir / "tablespaces").is_dir() else []:
            tablespaces[ts.name] = where / f"ts-{ts.name}"
            subprocess.run(["cp", "-a", str(ts), str(tablespaces[ts.name])], check=True)
    else:
        extract(base_tar(backup_dir), copy)
        for archive in sorted(backup_dir.glob("*.tar*")):
            stem = archive.name.split(".", 1)[0]
            if stem.isdigit():
                tablespaces[stem] = extract(archive, where / f"ts-{stem}")
    pg_wal = copy / "pg_wal"
    if pg_wal.is_symlink():
        pg_wal.unlink()
    pg_wal.mkdir(exist_ok=True)
    for archive in sorted(backup_dir.glob("pg_wal.tar*")):
        extract(archive, pg_wal)
    if tablespaces:
        lines = []
        for line in (copy / "tablespace_map").read_text().splitlines():
            oid = line.split(" ", 1)[0]
            lines.append(f"{oid} {tablespaces[oid]}" if oid in tablespaces else line)
        (copy / "tablespace_map").write_text("\n".join(lines) + "\n")
        for path in tablespaces.values():
            subprocess.run(["chown", "-R", f"{OS_USER}:{OS_USER}", str(path)], check=True)
            path.chmod(0o700)
    return copy, tablespaces


def restore_backup(cluster, backup_dir, where, restore):
    """Restore a complete backup with the ``restore`` fixture, replaying from the cluster's archive:
    (the restored cluster, seconds the restore took)."""
    copy, _tablespaces = materialize(backup_dir, where)
    started = time.monotonic()
    restored = restore(cluster, copy)
    return restored, time.monotonic() - started
