"""The decisive test: an exclusive backup taken with tar restores.

start -> tar of the data directory (the collection's exclusion list) -> stop
-> restore from the WAL archive with recovery_target = 'immediate' -> the
server reaches consistency and holds exactly the rows committed before the
stop.
"""

import subprocess
import uuid

from ansible_collections.pgexclusive.backup.plugins.module_utils.backup_files import EMPTY_DIRS, tar_exclude_args
from ansible_collections.pgexclusive.backup.plugins.module_utils.backup_label import LABEL_FILE, restorable_label


def insert(pg, db, phase, first, count):
    pg.sql("INSERT INTO t SELECT g, %s FROM generate_series(%s, %s) g", (phase, first, first + count - 1), dbname=db)


def tar_copy(pg, scratch):
    tarball = scratch / "base.tar"
    proc = subprocess.run(
        ["tar", "-C", str(pg.data_dir), "-cf", str(tarball), *tar_exclude_args(), "."],
        capture_output=True, text=True, check=False)
    # GNU tar exits 1 when a file changed while it was read: normal on a live cluster.
    assert proc.returncode in (0, 1), proc.stderr
    copy = scratch / "copy"
    copy.mkdir()
    subprocess.run(["tar", "-C", str(copy), "-xf", str(tarball)], check=True)
    for name in EMPTY_DIRS:
        # Left out whole (pg_wal may be a link to the live WAL); the collection's copy adds them empty.
        assert not (copy / name).exists(), name
        (copy / name).mkdir(mode=0o700)
    return copy


def test_tar_backup_restores_rows_committed_before_stop(pg, db, scratch, restore):
    pg.sql("CREATE TABLE t (id int PRIMARY KEY, phase text NOT NULL)", dbname=db)
    insert(pg, db, "before start", 1, 1000)

    pg.start_backup(f"restore-test {uuid.uuid4()}")
    insert(pg, db, "during backup", 1001, 1000)
    copy = tar_copy(pg, scratch)
    insert(pg, db, "after copy, before stop", 2001, 1000)
    stop_lsn = pg.stop_backup()
    insert(pg, db, "after stop", 3001, 1000)
    pg.wait_archived(pg.walfile(stop_lsn))

    assert (copy / LABEL_FILE).exists(), "the copy must carry backup_label"
    assert not (copy / "postmaster.pid").exists()
    if pg.api == "extension":
        label = copy / LABEL_FILE
        label.write_text(restorable_label(label.read_text()))

    restored = restore(pg, copy)
    rows = dict(restored.sql("SELECT phase, count(*) FROM t GROUP BY phase", dbname=db))
    assert rows == {"before start": 1000, "during backup": 1000, "after copy, before stop": 1000}
    assert not (restored.data_dir / LABEL_FILE).exists(), "recovery consumes backup_label"
