"""The facts of a restorable backup, as the unit tests of backup_record and retention record them."""

RESTORABLE = {"label": "x", "start_lsn": "0/2000028", "stop_lsn": "0/3000100",
              "stop_wal_file": "000000010000000000000003", "archived": True}
