"""A data directory in backup mode, as the unit tests of the copy see it; and the swaps that attack it."""

import os
import pwd
import struct


LABEL = """START WAL LOCATION: 0/2000028 (file 000000010000000000000002)
CHECKPOINT LOCATION: 0/2000060
BACKUP METHOD: pg_start_backup
BACKUP FROM: primary
START TIME: 2026-11-21 10:56:35 UTC
LABEL: run-1
START TIMELINE: 1
"""


SYSTEM_IDENTIFIER = 7309871234567890123


NOBODY = pwd.getpwnam("nobody")


def make_data_dir(root, waldir=False):
    """A data directory in backup mode with a tablespace; with ``waldir``, pg_wal links to another disk."""
    data = root / "data"
    for d in ("base/1", "pg_stat_tmp", "pg_tblspc", "base/pgsql_tmp", "global"):
        (data / d).mkdir(parents=True)
    if waldir:
        (root / "waldisk/archive_status").mkdir(parents=True)
        os.symlink(str(root / "waldisk"), str(data / "pg_wal"))
    else:
        (data / "pg_wal/archive_status").mkdir(parents=True)
    (data / "global/pg_control").write_bytes(struct.pack("=Q", SYSTEM_IDENTIFIER) + b"\0" * 100)
    (data / "PG_VERSION").write_text("15\n")
    (data / "base/1/1259").write_text("x" * 100)
    (data / "base/pgsql_tmp/tmp1").write_text("t")
    (data / "pg_wal/000000010000000000000002").write_text("w")
    (data / "pg_stat_tmp/global.stat").write_text("s")
    (data / "postmaster.pid").write_text("123\n")
    (data / "backup_label").write_text(LABEL)
    (data / "tablespace_map").write_text("16384 %s\n" % (root / "ts"))
    (root / "ts/PG_15_1").mkdir(parents=True)
    (root / "ts/PG_15_1/f").write_text("ts")
    os.symlink(str(root / "ts"), str(data / "pg_tblspc/16384"))
    return data


def swap_for_link(path, target):
    """What the server's OS user can do to a directory it owns the parent of: rename it away, put a link in its place."""
    os.rename(str(path), str(path) + ".moved")
    os.symlink(str(target), str(path))


def elsewhere(tmp_path):
    """A directory the copy must never read, holding a file named like the tablespace's and data directory's."""
    other = tmp_path / "elsewhere"
    (other / "PG_15_1").mkdir(parents=True)
    (other / "PG_15_1/f").write_text("elsewhere")
    (other / "backup_label").write_text(LABEL)
    (other / "secret").write_text("elsewhere")
    return other
