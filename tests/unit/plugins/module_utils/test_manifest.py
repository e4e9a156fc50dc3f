import hashlib
import json
import os
import stat

import pytest

from ansible_collections.pgexclusive.backup.plugins.module_utils import manifest as m
from ansible_collections.pgexclusive.backup.plugins.module_utils.errors import BackupError


def test_render_checksum_covers_everything_before_its_line():
    text = m.render([m.file_entry("PG_VERSION", 3, 0, "ab")], [{"timeline": 1, "start_lsn": "0/2000028", "end_lsn": "0/2000100"}])
    body, last = text.rsplit('"Manifest-Checksum"', 1)
    assert body.endswith("],\n")
    assert hashlib.sha256(body.encode()).hexdigest() in last
    assert text.endswith("}\n")
    doc = json.loads(text)
    assert doc["PostgreSQL-Backup-Manifest-Version"] == 1
    assert doc["Files"][0] == {"Path": "PG_VERSION", "Size": 3, "Last-Modified": "1970-01-01 00:00:00 GMT",
                               "Checksum-Algorithm": "SHA256", "Checksum": "ab"}
    assert doc["WAL-Ranges"] == [{"Timeline": 1, "Start-LSN": "0/2000028", "End-LSN": "0/2000100"}]


def test_walk_skips_pg_wal_and_manifest_and_follows_links(tmp_path):
    """A plain copy: pg_tblspc/<oid> links to <backup>/tablespaces/<oid>, inside the backup."""
    data = tmp_path / "data"
    (data / "pg_wal").mkdir(parents=True)
    (data / "pg_wal" / "seg").write_text("w")
    (data / "backup_manifest").write_text("{}")
    (data / "PG_VERSION").write_text("15\n")
    (tmp_path / "ts").mkdir()
    (tmp_path / "ts" / "f").write_text("x")
    (data / "pg_tblspc").mkdir()
    (data / "pg_tblspc" / "16384").symlink_to("../../ts")
    paths = [e["Path"] for e in m.walk_copy(str(data), str(tmp_path))]
    assert paths == ["PG_VERSION", "pg_tblspc/16384/f"]


@pytest.mark.parametrize("link", ["pg_tblspc/16384", "postgresql.conf", "pg_wal"])
def test_walk_refuses_links_that_leave_the_backup(tmp_path, link):
    """A link into a live tablespace, a live configuration file or the live WAL: never hashed, never trusted."""
    backup = tmp_path / "backup"
    data = backup / "data"
    (data / "pg_tblspc").mkdir(parents=True)
    (data / "PG_VERSION").write_text("15\n")
    live = tmp_path / "live"
    live.mkdir()
    (live / "f").write_text("live")
    (data / link).symlink_to(live / "f" if link == "postgresql.conf" else live)
    with pytest.raises(BackupError, match="outside the backup directory") as exc:
        m.walk_copy(str(data), str(backup))
    assert str(data / link) in exc.value.msg


def test_write_manifest(tmp_path):
    data = tmp_path / "data"
    (data / "pg_wal").mkdir(parents=True)
    (data / "PG_VERSION").write_text("15\n")
    written = m.write_manifest(str(tmp_path), 1, "0/1", "0/2")
    path = str(tmp_path / "backup_manifest")
    assert written == {"path": path, "files": 1, "bytes": 3, "verify": "pg_verifybackup -m %s %s -n" % (path, data)}
    doc = json.loads((tmp_path / "backup_manifest").read_text())
    assert doc["Files"][0]["Checksum"] == hashlib.sha256(b"15\n").hexdigest()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
    assert sorted(os.listdir(tmp_path)) == ["backup_manifest", "data"], "no temporary file is left"
