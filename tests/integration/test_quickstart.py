"""README.md's Quick start, run as written: its shell blocks, in order, in one bash, as root.

The server is what a stock Debian host has after `apt-get install
postgresql-15`: a cluster made by pg_createcluster with Debian's own
configuration in /etc (peer for local connections, no archiving), run by
pg_ctlcluster, with the fixture extension's files installed in Debian's
paths by the test bed. Only the first block (the cluster, the port and the
directories) is replaced, so that the run has a cluster and directories of its
own. The collection comes from its built tarball, installed by the Quick
start's own ansible-galaxy into a HOME of the test's; nothing of the test
suite's Ansible settings is in the environment.

It asserts what a new user would check, and more: the backup is complete and
was checked by a restore; the restored server holds exactly the 150 rows
committed before the point in time (not the 100 of the backup, not the 0
after the mistake); the live cluster still runs, out of backup mode, with
every change the Quick start made and no other in /etc.
"""

import json
import os
import pwd
import re
import subprocess
import uuid
from pathlib import Path

import pytest

from restore_helpers import make_dir, stop_restored
from runner import ANSIBLE_PLAYBOOK, REPO
from testbed import free_port
from testbed.debian import ETC, RUN_DIR, VAR_LIB, query_as_postgres, run_root
from testbed.osuser import open_to_postgres
from testbed.provision import provide

BIN = ANSIBLE_PLAYBOOK.parent
# The Debian clusters' worker: pg_createcluster and pg_dropcluster share /etc/postgresql.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("debian")]

BLOCK = re.compile(r"^```sh\n(# Quick start (\d+):.*?)^```\n", re.M | re.S)


def quickstart_blocks():
    """The Quick start's shell blocks, in order: [(number, text)]."""
    text = (REPO / "README.md").read_text()
    section = text[text.index("## Quick start\n"):]
    section = section[:section.index("\n## ", 1)]
    blocks = [(int(m.group(2)), m.group(1)) for m in BLOCK.finditer(section)]
    assert [number for number, _block in blocks] == list(range(1, len(blocks) + 1)) and len(blocks) >= 7, blocks
    return blocks


def mtimes(*paths):
    """Each path's mtime, None when absent: a directory that gained or lost an entry has a new one."""
    return [path.stat().st_mtime_ns if path.exists() else None for path in paths]


def test_the_quick_start_blocks_are_what_the_test_runs():
    """The first block names the stock cluster and paths the rest use; every other block uses only those names."""
    blocks = quickstart_blocks()
    first = blocks[0][1]
    assert "PG=15 CLUSTER=main PORT=5432" in first and "DEST=/srv/pgbackups" in first
    for _number, block in blocks[1:]:
        assert "/srv/" not in block and "5432" not in block, block


def etc_snapshot(conf_dir):
    return {p.relative_to(conf_dir).as_posix(): p.read_bytes() for p in sorted(conf_dir.rglob("*")) if p.is_file()}


@pytest.fixture
def stock_cluster(testbed_dir):
    """A cluster as apt leaves it: pg_createcluster's defaults, its socket in /var/run/postgresql, started."""
    inst = provide(15)
    name = "qs_" + uuid.uuid4().hex[:8]
    port = free_port()
    run_root(["pg_createcluster", "15", name, "-p", port, "--start-conf=manual", "--", "--locale=C.UTF-8"])
    try:
        # Loopback only (the stock default), and no TCP at all would change what the Quick start meets: kept.
        run_root(["pg_ctlcluster", "15", name, "start"])
        yield inst, name, port
    finally:
        run_root(["pg_dropcluster", "--stop", "15", name], check=False)


def test_the_quick_start_as_written(stock_cluster, testbed_dir, tmp_path):
    inst, name, port = stock_cluster
    conf_dir = ETC / "15" / name
    etc_before = etc_snapshot(conf_dir)
    root = make_dir(testbed_dir / f"quickstart-{name}")
    open_to_postgres(root)
    restore_port = free_port()
    settings = (f"# Quick start 1 (the test's own)\nPG=15 CLUSTER={name} PORT={port}\n"
                f"DEST={root}/pgbackups ARCHIVE={root}/wal-archive RESTORE={root}/restore "
                f"RESTORE_PORT={restore_port}\n")
    script = "set -euo pipefail\n" + settings + "".join(block for _number, block in quickstart_blocks()[1:])
    # The shell's directory, as a user's would be, one the postgres OS user may enter (runuser keeps it).
    work = make_dir(root / "work")
    home = make_dir(tmp_path / "home")
    build = subprocess.run([str(BIN / "ansible-galaxy"), "collection", "build", "--output-path", str(work), str(REPO)],
                           capture_output=True, text=True, cwd=str(REPO), check=False)
    assert build.returncode == 0, build.stdout + build.stderr
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("ANSIBLE_", "PGX_", "PG")) and k != "VIRTUAL_ENV"}
    # Ansible expands its default remote_tmp ~/.ansible/tmp as ~root, the real home, not $HOME (tests/conftest.py):
    # the one ANSIBLE_ setting kept, so that the run leaves nothing there.
    env.update(HOME=str(home), PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
               ANSIBLE_REMOTE_TEMP=str(home / ".ansible" / "tmp"))
    real_home = Path(pwd.getpwuid(os.getuid()).pw_dir) / ".ansible"
    real_home_before = mtimes(real_home, real_home / "tmp")
    try:
        proc = subprocess.run(["bash", "-c", script], cwd=str(work), env=env, capture_output=True, text=True,
                              timeout=900, check=False)
        log = f"/var/log/postgresql/postgresql-15-{name}.log"
        output = proc.stdout + proc.stderr + "\n--- " + log + ":\n" + (
            open(log).read()[-3000:] if os.path.exists(log) else "(none)")
        assert proc.returncode == 0, output[-8000:]
        assert proc.stdout.rstrip().splitlines()[-1] == "150", output[-3000:]
        assert '"status": "complete"' in proc.stdout
        assert "Restore check: True" in proc.stdout, "the backup was checked by a restore"
        assert "proved against its backup_manifest" in proc.stdout

        (label,) = os.listdir(root / "pgbackups")
        record = json.loads((root / "pgbackups" / label / "backup.json").read_text())
        assert record["status"] == "complete" and record["verify_restore"]["ok"] is True, record
        assert (home / ".ansible" / "collections" / "ansible_collections" / "pgexclusive" / "backup").is_dir()
        assert mtimes(real_home, real_home / "tmp") == real_home_before, \
            "the Quick start's run wrote into the real home's .ansible"

        restored = query_as_postgres(root / "restore" / "sock", restore_port, "SELECT id FROM quickstart ORDER BY id",
                                     "backupctl")
        live = query_as_postgres(RUN_DIR, port, "SELECT count(*) FROM quickstart", "backupctl")
        live_state = query_as_postgres(RUN_DIR, port, "SELECT pg_is_in_backup(), pg_is_in_recovery()", "backupctl")
        assert [r[0] for r in restored] == list(range(1, 151)), "exactly the rows before the point in time"
        assert live == [(0,)], "the live cluster keeps its own state (after the mistake)"
        assert live_state == [(False, False)]
        assert not (VAR_LIB / "15" / name / "backup_label").exists()
        assert run_root(["pg_lsclusters", "15", name]).stdout.count("online") == 1

        etc_after = etc_snapshot(conf_dir)
        changed = {k for k in set(etc_before) | set(etc_after) if etc_before.get(k) != etc_after.get(k)}
        assert changed == {"conf.d/pgexclusive-archiving.conf", "pg_hba.conf", "pg_ident.conf"}, changed
        assert etc_after["pg_ident.conf"].endswith(b"pgbackup root pgx_backup\n")
    finally:
        stop_restored(root / "restore" / "data", inst)
