import hashlib
import json
import os
import shutil
import stat
import subprocess

import pytest

from ansible_collections.pgexclusive.backup.plugins.module_utils import backup_layout as layout
from ansible_collections.pgexclusive.backup.plugins.module_utils import manifest as m
from ansible_collections.pgexclusive.backup.plugins.module_utils.copy.io import gzip_parallel
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
    assert written.pop("duration") >= 0
    assert written == {"path": path, "files": 1, "bytes": 3, "verify": "pg_verifybackup -m %s %s -n" % (path, data),
                       "format": "plain"}
    doc = json.loads((tmp_path / "backup_manifest").read_text())
    assert doc["Files"][0]["Checksum"] == hashlib.sha256(b"15\n").hexdigest()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
    assert sorted(os.listdir(tmp_path)) == ["backup_manifest", "data"], "no temporary file is left"


@pytest.mark.parametrize("name, expected", [
    ("base.tar", ("base", "none")), ("base.tar.gz", ("base", "gzip")), ("base.tar.zst", ("base", "zstd")),
    ("16384.tar", ("16384", "none")), ("16384.tar.zst", ("16384", "zstd")), ("pg_wal.tar.gz", ("pg_wal", "gzip")),
    ("base.tgz", None), ("base.tar.lz4", None), ("backup.json", None), ("x16384.tar", None), (".tar", None),
])
def test_tar_names_are_those_pg_verifybackup_18_reads(name, expected):
    assert layout.tar_archive(name) == expected


def test_copy_format(tmp_path):
    assert layout.copy_format(str(tmp_path / "missing")) is None
    assert layout.copy_format(str(tmp_path)) is None
    (tmp_path / "16384.tar").write_text("")
    assert layout.copy_format(str(tmp_path)) is None, "a tablespace without base.tar is no copy"
    (tmp_path / "base.tar.zst").write_text("")
    assert layout.copy_format(str(tmp_path)) == "tar"
    (tmp_path / "data").mkdir()
    assert layout.copy_format(str(tmp_path)) == "plain"


@pytest.mark.parametrize("name, prefix, expected", [
    ("./base/1/112", "", "base/1/112"),
    ("backup_label", "", "backup_label"),
    (".", "", None),
    ("./", "", None),
    ("./pg_wal/000000010000000000000002", "", None),
    ("backup_manifest", "", None),
    ("/abs/file", "", "abs/file"),
    ("./sub/../base/x", "", "base/x"),
    ("./PG_15_202209061/16385/16386", "pg_tblspc/16384/", "pg_tblspc/16384/PG_15_202209061/16385/16386"),
    ("./pg_wal", "pg_tblspc/16384/", "pg_tblspc/16384/pg_wal"),
])
def test_member_path_as_pg_verifybackup_looks_it_up(name, prefix, expected):
    assert m.member_path(name, prefix) == expected


def tar_backup(tmp_path, compression):
    """A tar backup as the copy writes it: GNU tar of ./ (members './...'), gzip in members of 4 KiB blocks."""
    data = tmp_path / "live"
    (data / "base" / "1").mkdir(parents=True)
    (data / "pg_wal").mkdir()
    (data / "pg_tblspc").mkdir()
    (data / "PG_VERSION").write_text("15\n")
    (data / "backup_label").write_text("BACKUP METHOD: streamed\n")
    (data / "base" / "1" / "112").write_bytes(os.urandom(50000))
    (data / "pg_tblspc" / "16384").symlink_to("/elsewhere/ts")
    ts = tmp_path / "ts"
    (ts / "PG_15_202209061" / "5").mkdir(parents=True)
    (ts / "PG_15_202209061" / "5" / "16390").write_bytes(b"t" * 9000)
    backup = tmp_path / "backup"
    backup.mkdir()
    for source, stem in ((data, "base"), (ts, "16384")):
        out = str(backup / layout.tar_name(stem, compression))
        if compression == "gzip":
            assert gzip_parallel(["tar", "-C", str(source), "-cf", "-", "."], out, 2, block=4096)[0] == 0
        else:
            subprocess.check_call(["tar", "-C", str(source), "-cf", out] + layout.TAR_COMPRESS_ARG[compression] + ["."])
    (backup / layout.tar_name("pg_wal", compression)).write_text("not read: the WAL is no file of the manifest")
    (backup / "backup.json").write_text("{}")
    return backup, data, ts


COMPRESSIONS = [c if c != "zstd" or shutil.which("zstd") else pytest.param(c, marks=pytest.mark.skip("no zstd"))
                for c in layout.COMPRESSIONS]


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_tar_manifest_describes_the_bytes_inside_the_archives(tmp_path, compression):
    backup, data, ts = tar_backup(tmp_path, compression)
    written = m.write_manifest(str(backup), 1, "0/2000028", "0/2000100")
    path = str(backup / "backup_manifest")
    assert written["verify"] == ("pg_verifybackup -F t -n -i backup.json -m %s %s  # needs pg_verifybackup of "
                                 "PostgreSQL 18 or later (older ones read plain copies only), for any major" % (path, backup))
    assert written["format"] == "tar" and written["files"] == 4 and written["bytes"] == 3 + 24 + 50000 + 9000
    doc = json.loads((backup / "backup_manifest").read_text())
    files = dict((f["Path"], f) for f in doc["Files"])
    assert sorted(files) == ["PG_VERSION", "backup_label", "base/1/112", "pg_tblspc/16384/PG_15_202209061/5/16390"]
    assert [f["Path"] for f in doc["Files"]][-1].startswith("pg_tblspc/"), "base.tar first, then the tablespaces"
    for rel, source in (("base/1/112", data / "base/1/112"),
                        ("pg_tblspc/16384/PG_15_202209061/5/16390", ts / "PG_15_202209061/5/16390")):
        content = source.read_bytes()
        assert files[rel]["Size"] == len(content)
        assert files[rel]["Checksum"] == hashlib.sha256(content).hexdigest()
        assert files[rel]["Last-Modified"] == m.last_modified(source.stat().st_mtime)
    assert doc["WAL-Ranges"] == [{"Timeline": 1, "Start-LSN": "0/2000028", "End-LSN": "0/2000100"}]


def test_gzip_members_after_the_first_are_read(tmp_path):
    """Older releases (and pigz) wrote one gzip member per block: a reader that stops after the first would miss
    most files."""
    import gzip
    backup, data, _ts = tar_backup(tmp_path, "gzip")
    archive = backup / "base.tar.gz"
    tar = gzip.decompress(archive.read_bytes())
    archive.write_bytes(b"".join(gzip.compress(tar[at:at + 1024]) for at in range(0, len(tar), 1024)))
    assert archive.read_bytes().count(b"\x1f\x8b\x08") > 3
    paths = [e["Path"] for e in m.read_archive(str(archive), "gzip")]
    assert sorted(paths) == ["PG_VERSION", "backup_label", "base/1/112"]


@pytest.mark.parametrize("cut", ["in a header", "at a block boundary"])
def test_a_tar_cut_short_fails_the_manifest(tmp_path, cut):
    """tarfile ends quietly at a missing header: the manifest must not describe what is left as the backup."""
    backup, _data, _ts = tar_backup(tmp_path, "none")
    archive = backup / "base.tar"
    content = archive.read_bytes()
    end = -(-len(content.rstrip(b"\0")) // 512) * 512
    archive.write_bytes(content[:2000] if cut == "in a header" else content[:end])
    with pytest.raises(BackupError, match="base.tar could not be read back .* it was cut short"):
        m.write_manifest(str(backup), 1, "0/1", "0/2")


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_a_damaged_archive_fails_the_manifest_naming_it(tmp_path, compression):
    backup, _data, _ts = tar_backup(tmp_path, compression)
    name = layout.tar_name("base", compression)
    archive = backup / name
    archive.write_bytes(archive.read_bytes()[:2000])
    with pytest.raises(BackupError, match="could not be read back for the backup_manifest") as exc:
        m.write_manifest(str(backup), 1, "0/1", "0/2")
    assert name in exc.value.msg
    assert not (backup / "backup_manifest").exists()


def test_no_copy_no_manifest(tmp_path):
    (tmp_path / "backup.json").write_text("{}")
    with pytest.raises(BackupError, match="holds neither data/ nor base.tar"):
        m.write_manifest(str(tmp_path), 1, "0/1", "0/2")


def plain_backup(tmp_path):
    """A plain backup as the copy writes it: data/ with pg_tblspc/16384 -> ../../tablespaces/16384, and its manifest."""
    backup = tmp_path / "backup"
    data = backup / "data"
    for sub in ("base/1", "pg_wal", "pg_tblspc", "global"):
        (data / sub).mkdir(parents=True)
    (data / "PG_VERSION").write_text("15\n")
    (data / "base" / "1" / "112").write_bytes(os.urandom(3000))
    (data / "pg_wal" / "000000010000000000000002").write_text("WAL: never listed")
    ts = backup / "tablespaces" / "16384" / "PG_15_202209061" / "5"
    ts.mkdir(parents=True)
    (ts / "16390").write_bytes(b"t" * 900)
    (data / "pg_tblspc" / "16384").symlink_to("../../tablespaces/16384")
    m.write_manifest(str(backup), 1, "0/2000028", "0/2000100")
    return backup


def test_verify_copy_of_a_plain_backup(tmp_path):
    backup = plain_backup(tmp_path)
    assert m.verify_copy(str(backup)) == {"format": "plain", "files": 3, "bytes": 3 + 3000 + 900}


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_verify_copy_of_a_tar_backup(tmp_path, compression):
    backup, _data, _ts = tar_backup(tmp_path, compression)
    m.write_manifest(str(backup), 1, "0/2000028", "0/2000100")
    assert m.verify_copy(str(backup)) == {"format": "tar", "files": 4, "bytes": 3 + 24 + 50000 + 9000}


def _flip_last_byte(path):
    content = bytearray(path.read_bytes())
    content[-1] ^= 1
    path.write_bytes(bytes(content))


@pytest.mark.parametrize("change, difference", [
    (lambda b: (b / "data" / "base" / "1" / "112").unlink(), "base/1/112 is missing from the copy"),
    (lambda b: (b / "data" / "base" / "1" / "113").write_text("planted"), "base/1/113 is in the copy but not in the manifest"),
    (lambda b: (b / "data" / "PG_VERSION").write_text("15\n\n"), "PG_VERSION has 4 bytes, the manifest says 3"),
    (lambda b: _flip_last_byte(b / "tablespaces" / "16384" / "PG_15_202209061" / "5" / "16390"),
     "pg_tblspc/16384/PG_15_202209061/5/16390 does not have the SHA256 checksum the manifest lists"),
])
def test_verify_copy_names_the_first_difference_of_a_plain_backup(tmp_path, change, difference):
    backup = plain_backup(tmp_path)
    change(backup)
    with pytest.raises(BackupError, match="does not match its backup_manifest") as exc:
        m.verify_copy(str(backup))
    assert exc.value.msg == "The backup %s does not match its backup_manifest: %s." % (backup, difference)


def test_verify_copy_reads_the_members_of_a_tar_backup(tmp_path):
    """One byte changed inside a member, the archive re-packed with the same sizes: the checksum tells."""
    backup, data, ts = tar_backup(tmp_path, "none")
    m.write_manifest(str(backup), 1, "0/2000028", "0/2000100")
    _flip_last_byte(ts / "PG_15_202209061" / "5" / "16390")
    subprocess.check_call(["tar", "-C", str(ts), "-cf", str(backup / "16384.tar"), "."])
    with pytest.raises(BackupError, match="pg_tblspc/16384/PG_15_202209061/5/16390 does not have the SHA256"):
        m.verify_copy(str(backup))


def test_verify_copy_refuses_a_changed_manifest(tmp_path):
    """A file's entry changed by hand: the manifest's own checksum no longer matches."""
    backup = plain_backup(tmp_path)
    path = backup / "backup_manifest"
    path.write_text(path.read_text().replace('"Size": 3,', '"Size": 4,'))
    with pytest.raises(BackupError, match="does not match its own Manifest-Checksum"):
        m.verify_copy(str(backup))
    path.write_text(path.read_text().rsplit("\n", 2)[0] + "\n")
    with pytest.raises(BackupError, match="is no backup_manifest this check reads"):
        m.verify_copy(str(backup))


def test_verify_copy_without_a_manifest(tmp_path):
    backup = plain_backup(tmp_path)
    (backup / "backup_manifest").unlink()
    with pytest.raises(BackupError, match="has no backup_manifest") as exc:
        m.verify_copy(str(backup))
    assert exc.value.facts == {"reason": "no backup_manifest"}


def test_verify_copy_refuses_a_tablespace_linked_out_of_the_backup(tmp_path):
    """tablespaces/16384 swapped for a link to a root-only directory: never read, never vouched for."""
    backup = plain_backup(tmp_path)
    secret = tmp_path / "secret"
    shutil.move(str(backup / "tablespaces" / "16384"), str(secret))
    (backup / "tablespaces" / "16384").symlink_to(secret)
    with pytest.raises(BackupError, match="outside the backup directory"):
        m.verify_copy(str(backup))


@pytest.mark.usefixtures("no_hang")
def test_a_fifo_in_a_copy_is_refused_not_read(tmp_path):
    """A backup is untrusted input: a planted FIFO must not hang the check that proves the copy."""
    os.mkfifo(str(tmp_path / "planted"))
    with pytest.raises(BackupError, match="planted in the copy is not a regular file"):
        m.sha256_file(str(tmp_path / "planted"))
