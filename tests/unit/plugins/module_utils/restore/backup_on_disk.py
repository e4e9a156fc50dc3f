"""A backup on disk, as the unit tests of the restore's phases write it."""

import json
import os


def write(backup_dir, content):
    os.makedirs(str(backup_dir))
    (backup_dir / "backup.json").write_text(json.dumps(content))


RECORD = {"label": "nightly", "status": "complete", "system_identifier": "7", "start_lsn": "0/2000028",
          "start_wal_file": "000000010000000000000002", "stop_lsn": "0/3000100",
          "stop_wal_file": "000000010000000000000003"}
