"""Helpers of the restore engine's integration tests (test_restore_role.py, test_restore_targets.py).

Restored servers run as the postgres OS user on a socket and port of their
own; they are read over that socket and stopped by the PID in their
postmaster.pid, never by name.
"""

import os
import subprocess
import time
from pathlib import Path

from testbed import free_port
from testbed.osuser import as_postgres, chown_postgres

from ansible_collections.pgexclusive.backup.plugins.module_utils.restore.server import alive, postmaster_pid


def insert(cluster, db, first, last, phase):
    cluster.sql("INSERT INTO t SELECT g, %s FROM generate_series(%s, %s) g", (phase, first, last), dbname=db)


def make_dir(path):
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o755)
    return path


def socket_dir(path):
    """A directory for a restored server's socket, which the server (postgres) creates the socket in."""
    make_dir(path)
    chown_postgres(path)
    return path


def stop_restored(data_dir, inst):
    """Stop a restored server by the PID in its postmaster.pid (fast, then SIGKILL)."""
    pid = postmaster_pid(str(data_dir))
    if not pid or not alive(pid):
        return
    subprocess.run(as_postgres([inst.tool("pg_ctl"), "-D", str(data_dir), "-m", "fast", "-w", "-t", "60", "stop"]),
                   capture_output=True, check=False)
    deadline = time.monotonic() + 10
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if alive(pid):
        os.kill(pid, 9)


def connect_restored(result, db="postgres"):
    """A connection to the server a restore left running, over its own socket, as postgres."""
    import psycopg2
    conn = psycopg2.connect(host=result["socket_dir"], port=result["port"], user="postgres", dbname=db)
    conn.autocommit = True
    return conn


def rows_of(result, db):
    """{phase: set(ids)} of the server a restore left running, read over its own socket."""
    conn = connect_restored(result, db)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT id FROM t")
            ids = {row[0] for row in cur.fetchall()}
            cur.execute("SELECT current_setting('archive_mode'), pg_tablespace_location(oid) FROM pg_tablespace "
                        "WHERE spcname = 'ts'")
            archive_mode, location = cur.fetchone() or (None, None)
        return {"ids": ids, "archive_mode": archive_mode, "ts_location": location}
    finally:
        conn.close()


def tree_listing(top):
    return sorted(os.path.relpath(os.path.join(root, name), top)
                  for root, dirs, files in os.walk(top) for name in dirs + files)


def restore_port():
    return free_port()


def bindir(cluster):
    return str(Path(cluster.inst.tool("pg_ctl")).parent)
