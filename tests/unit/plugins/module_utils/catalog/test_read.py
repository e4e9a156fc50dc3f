"""catalog/read.py and the facade: the reader on hand-made destinations, as hostile as a backup can be."""

import json
import os
import shutil

import pytest

from ansible_collections.pgexclusive.backup.plugins.module_utils import catalog as c
from ansible_collections.pgexclusive.backup.plugins.module_utils.catalog import read
from ansible_collections.pgexclusive.backup.plugins.module_utils.errors import BackupError
from ansible_collections.pgexclusive.backup.plugins.module_utils.manifest import write_manifest
from ansible_collections.pgexclusive.backup.tests.unit.plugins.module_utils.catalog.records import (
    GOOD, NOW)


def make_backup(dest, label, record=None, manifest=True):
    """A plain copy with its own backup_label, its manifest by the real writer, and its backup.json."""
    record = dict(GOOD, label=label) if record is None else record
    data = dest / label / "data"
    (data / "pg_wal").mkdir(parents=True)
    (data / "PG_VERSION").write_text("15\n")
    (data / "backup_label").write_text("START WAL LOCATION: %s (file %s)\n" % (GOOD["start_lsn"],
                                                                               GOOD["start_wal_file"]))
    if manifest:
        write_manifest(str(dest / label), 1, GOOD["start_lsn"], GOOD["stop_lsn"])
    (dest / label / "backup.json").write_text(json.dumps(record))
    return dest / label


def tree(top):
    found = {}
    for root, dirs, files in os.walk(str(top)):
        for name in dirs + files:
            st = os.lstat(os.path.join(root, name))
            found[os.path.relpath(os.path.join(root, name), str(top))] = (st.st_mode, st.st_size, st.st_mtime_ns)
    return found


def run_catalog(dest, **params):
    return c.catalog(dict({"dest": str(dest), "archive_dir": None, "archive_dirs": {}, "verify_files": False},
                          **params), False, now=NOW)


def by_label(result):
    return dict((r["label"], r) for r in result["backups"])


def test_a_sound_destination_and_nothing_written(tmp_path):
    dest = tmp_path / "dest"
    make_backup(dest, "good")
    archive = tmp_path / "archive"
    archive.mkdir()
    for segment in ("000000010000000000000002", "000000010000000000000003"):
        (archive / segment).write_text("")
    before = tree(dest)
    result = run_catalog(dest, archive_dir=str(archive), verify_files=True)
    assert tree(dest) == before
    row = by_label(result)["good"]
    assert (row["restorable"], row["problems"], row["wal_checked"]) == (True, [], True)
    assert result["summary"]["files_checked"] is True and result["summary"]["wal_checked"] == 1
    assert result["clusters"][0]["newest_restorable"] == "good"
    assert any(line.startswith("  good ") for line in result["table"])
    assert c.catalog(dict(dest=str(dest), archive_dir=str(archive), archive_dirs={}, verify_files=True), True,
                     now=NOW) == result


def test_wal_missing_from_the_archive_of_the_backup_s_own_cluster(tmp_path):
    dest = tmp_path / "dest"
    make_backup(dest, "good")
    make_backup(dest, "own-wal", dict(GOOD, label="own-wal", wal_included=["000000010000000000000002"]))
    archive = tmp_path / "archive"
    archive.mkdir()
    (archive / "000000010000000000000002").write_text("")
    got = by_label(run_catalog(dest, archive_dirs={"7": str(archive)}, archive_dir=str(tmp_path / "elsewhere")))
    assert [p["kind"] for p in got["good"]["problems"]] == ["wal_missing"]
    assert "000000010000000000000003" in got["good"]["problems"][0]["message"]
    assert got["own-wal"]["restorable"] is True and got["own-wal"]["wal_checked"] is False


@pytest.mark.parametrize("fields, why", [
    ({"stop_wal_file": "00000001FFFFFFFF000000FF"}, "segments long"),
    ({"stop_wal_file": "000000020000000000000003"}, "timeline 1 and stops on timeline 2"),
    ({"stop_wal_file": "000000010000000000000001"}, "comes before"),
    ({"start_wal_file": "not-a-segment"}, "no start and stop WAL file"),
])
def test_a_wal_range_that_lies_is_reported_not_listed(tmp_path, fields, why):
    dest = tmp_path / "dest"
    make_backup(dest, "b", dict(GOOD, **fields))
    archive = tmp_path / "archive"
    archive.mkdir()
    row = by_label(run_catalog(dest, archive_dir=str(archive)))["b"]
    assert [p["kind"] for p in row["problems"]] == ["wal_unknown"] and why in row["problems"][0]["message"]


def test_damaged_missing_and_disagreeing_copies(tmp_path):
    dest = tmp_path / "dest"
    make_backup(dest, "no-manifest", manifest=False)
    damaged = make_backup(dest, "damaged")
    text = (damaged / "backup_manifest").read_text()
    (damaged / "backup_manifest").write_text(text.replace('"Size": 3', '"Size": 4'))
    changed = make_backup(dest, "changed-file")
    (changed / "data" / "PG_VERSION").write_text("16\n")
    disagrees = make_backup(dest, "disagrees")
    (disagrees / "data" / "backup_label").write_text("START WAL LOCATION: 0/9000028 (file 000000010000000000000009)\n")
    snapshot = make_backup(dest, "snapshot", dict(GOOD, method="command"), manifest=False)
    os.rename(str(snapshot / "data" / "backup_label"), str(snapshot / "backup_label.restorable"))
    shutil.rmtree(str(snapshot / "data"))
    got = by_label(run_catalog(dest))
    kinds = dict((label, [p["kind"] for p in r["problems"]]) for label, r in got.items())
    assert kinds == {"no-manifest": ["no_manifest"], "damaged": ["manifest_damaged"], "changed-file": [],
                     "disagrees": ["copy_disagrees"], "snapshot": []}
    assert [p["kind"] for p in by_label(run_catalog(dest, verify_files=True))["changed-file"]["problems"]] == [
        "copy_differs"]


def test_hostile_entries_are_listed_never_followed_and_never_crash(tmp_path):
    dest = tmp_path / "dest"
    outside = tmp_path / "outside"
    make_backup(outside, "planted")
    dest.mkdir()
    os.symlink(str(outside / "planted"), str(dest / "link-to-a-backup"))
    os.symlink(str(tmp_path / "nowhere"), str(dest / "dangling"))
    (dest / "a-file").write_text("not a backup")
    (dest / "huge").mkdir()
    with (dest / "huge" / "backup.json").open("wb") as handle:
        handle.truncate(read.MAX_RECORD_BYTES + 1)
    (dest / "deep").mkdir()
    (dest / "deep" / "backup.json").write_text("[" * 100000 + "]" * 100000)
    (dest / "binary").mkdir()
    (dest / "binary" / "backup.json").write_bytes(b"\xff\xfe{}")
    (dest / "record-link").mkdir()
    os.symlink(str(outside / "planted" / "backup.json"), str(dest / "record-link" / "backup.json"))
    (dest / "record-fifo").mkdir()
    os.mkfifo(str(dest / "record-fifo" / "backup.json"))
    (dest / "record-dir").mkdir()
    (dest / "record-dir" / "backup.json").mkdir()
    (dest / "types").mkdir()
    (dest / "types" / "backup.json").write_text(json.dumps({"format": 1, "status": ["complete"], "checks": "x",
                                                            "start_lsn": {"a": 1}, "bytes": "many"}))
    (dest / "wrong-complete").mkdir()
    (dest / "wrong-complete" / "backup.json").write_text(json.dumps(dict(GOOD, start_lsn=5, timeline="one")))
    data_link = make_backup(dest, "data-linked")
    os.rename(str(data_link / "data"), str(tmp_path / "moved-data"))
    os.symlink(str(tmp_path / "moved-data"), str(data_link / "data"))
    manifest_link = make_backup(dest, "manifest-linked")
    os.rename(str(manifest_link / "backup_manifest"), str(tmp_path / "moved-manifest"))
    os.symlink(str(tmp_path / "moved-manifest"), str(manifest_link / "backup_manifest"))
    fifo_label = make_backup(dest, "fifo-label")
    os.unlink(str(fifo_label / "data" / "backup_label"))
    os.mkfifo(str(fifo_label / "data" / "backup_label"))
    fifo_file = make_backup(dest, "fifo-file")
    os.mkfifo(str(fifo_file / "data" / "planted"))
    nasty = "evil\n\x1b[31mred\rlabel\u2028x"
    make_backup(dest, nasty, dict(GOOD, label="../../etc/passwd", status="failed", error="bad\n\x1b[2J"))
    os.mkdir(os.path.join(str(dest).encode(), b"not-utf8-\xff"))
    before, outside_before = tree(dest), tree(outside)
    result = run_catalog(dest, verify_files=True, archive_dir=str(tmp_path))
    assert tree(dest) == before and tree(outside) == outside_before
    got = by_label(result)
    kinds = dict((label, [p["kind"] for p in r["problems"]]) for label, r in got.items())
    assert kinds == {
        "link-to-a-backup": ["link"], "dangling": ["link"], "huge": ["unreadable_record"],
        "deep": ["unreadable_record"], "binary": ["unreadable_record"], "record-link": ["unreadable_record"],
        "record-fifo": ["unreadable_record"], "record-dir": ["unreadable_record"],
        "types": ["malformed_record", "unknown_status"],
        "wrong-complete": ["malformed_record", "incomplete", "copy_disagrees", "no_manifest", "wal_unknown"],
        "data-linked": ["copy_disagrees"], "manifest-linked": ["copy_disagrees"], nasty: ["failed"],
        "fifo-label": ["copy_disagrees", "copy_differs", "wal_missing"], "fifo-file": ["copy_differs", "wal_missing"],
        "not-utf8-\\xff": ["no_record"]}
    assert "a-file" not in got
    assert got["link-to-a-backup"]["status"] is None, "the record behind a link is never read"
    assert "more than" in got["huge"]["problems"][0]["message"]
    assert "symbolic link" in got["record-link"]["problems"][0]["message"]
    assert "data in the backup directory is a symbolic link" in got["data-linked"]["problems"][0]["message"]
    # A FIFO is read as no file (backup_order, beneath.open_file_beneath), and refused by the manifest check.
    assert "backup_label" in got["fifo-label"]["problems"][0]["message"]
    assert "backup_label in the copy is not a regular file" in got["fifo-label"]["problems"][1]["message"]
    assert "planted in the copy is not a regular file" in got["fifo-file"]["problems"][0]["message"]
    assert got[nasty]["path"] == os.path.join(str(dest), nasty), "the directory's name, not the record's label"
    for line in result["table"]:
        assert "\n" not in line and "\r" not in line and "\x1b" not in line and "\u2028" not in line, line
    assert any("evil\\x0a\\x1b[31mred\\x0dlabel\\u2028x" in line for line in result["table"])
    json.dumps(result)


def test_a_missing_dest_is_an_error_that_says_what_to_do(tmp_path):
    with pytest.raises(BackupError, match="is not a directory: there are no backups to list"):
        run_catalog(tmp_path / "none")


def test_an_unlistable_dest_is_an_error(tmp_path):
    with pytest.raises(BackupError, match="Cannot list the backups in"):
        read.entries(str(tmp_path / "none"))
