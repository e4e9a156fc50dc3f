"""A crashed primary's data directory, as the unit tests of pg_backup_info's files and pg_clear_backup_label see it."""

LABEL = """START WAL LOCATION: 0/2000028 (file 000000010000000000000002)
CHECKPOINT LOCATION: 0/3000060
BACKUP METHOD: pg_start_backup
BACKUP FROM: primary
START TIME: 1970-01-01 00:00:00 UTC
LABEL: nightly
START TIMELINE: 1
"""


def make_datadir(path):
    (path / "PG_VERSION").write_text("15\n")
    (path / "pg_wal").mkdir()
    (path / "pg_tblspc").mkdir()
    return path
