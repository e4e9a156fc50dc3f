"""Run the exclusive_backup role through the real ansible-playbook against a test bed cluster."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def connection_vars(cluster):
    return {
        "exclusive_backup_login_unix_socket": str(cluster.socket_dir),
        "exclusive_backup_login_port": cluster.port,
        "exclusive_backup_login_user": "postgres",
        "exclusive_backup_login_db": cluster.backup_db,
    }


def write_inventory(path):
    path.write_text(
        "all:\n  hosts:\n    localhost:\n"
        "      ansible_connection: local\n"
        f"      ansible_python_interpreter: {sys.executable}\n")
    return path


class Run:
    def __init__(self, rc, output, result, seconds):
        self.rc, self.output, self.result, self.seconds = rc, output, result, seconds

    def __repr__(self):
        return f"<Run rc={self.rc} {self.seconds:.1f}s result={self.result}>"


def role_playbook(result_file):
    """A play running the role and writing exclusive_backup_result to ``result_file``, whatever happens."""
    return (
        "- hosts: localhost\n  gather_facts: false\n  tasks:\n"
        "    - block:\n"
        "        - ansible.builtin.include_role:\n            name: pgexclusive.backup.exclusive_backup\n"
        "      always:\n"
        "        - ansible.builtin.copy:\n"
        "            content: \"{{ exclusive_backup_result | default({}) | to_json }}\"\n"
        f"            dest: {result_file}\n"
        "            mode: '0600'\n")


def playbook_env():
    return dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_RETRY_FILES_ENABLED="0",
                ANSIBLE_LOCALHOST_WARNING="0", ANSIBLE_HOST_KEY_CHECKING="0", ANSIBLE_PIPELINING="1")


def run_role(cluster, workdir, playbook=None, **role_vars):
    """Run the role (or ``playbook``) on localhost; return Run with exclusive_backup_result."""
    workdir = Path(workdir)
    result_file = workdir / f"result-{time.monotonic_ns()}.json"
    variables = {**connection_vars(cluster), **role_vars}
    vars_file = workdir / "vars.json"
    vars_file.write_text(json.dumps(variables))
    if playbook is None:
        playbook = workdir / "play.yml"
        playbook.write_text(role_playbook(result_file))
    inventory = write_inventory(workdir / "inventory.yml")
    env = playbook_env()
    started = time.monotonic()
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(inventory), str(playbook),
         "-e", f"@{vars_file}"],
        capture_output=True, text=True, env=env, cwd=str(REPO), timeout=600, check=False)
    result = json.loads(result_file.read_text()) if result_file.exists() else None
    return Run(proc.returncode, proc.stdout + proc.stderr, result, time.monotonic() - started)


class Writer:
    """Commits one row at a time in a thread, noting the WAL insert position around each commit.

    After a restore to the backup's end (stop_lsn), a row whose commit ended
    before stop_lsn must be there and a row begun after it must not.
    """

    def __init__(self, cluster, dbname, table="t"):
        import threading
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
