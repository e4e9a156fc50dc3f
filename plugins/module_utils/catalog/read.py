# -*- coding: utf-8 -*-
# Copyright: pgexclusive.backup maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""What the catalog reads of each directory of dest, and nothing written: a backup is untrusted input.

Every file is opened beneath dest without following a link (beneath.py); a
backup directory that is a link, or whose copy's top-level entries are links,
is never read through, and a FIFO or device is never opened blocking. backup.json is read up to a bound and taken apart by
catalog/decide.py::clean. The copy is checked by the code that restores and
retention use (retention.py::copy_disagreement, manifest.py), the WAL by the
restore's own list of the segments a backup needs (restore/prove.py).
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import errno
import json
import os
import stat

from ansible_collections.pgexclusive.backup.plugins.module_utils.backup_layout import (
    DATA_SUBDIR, MANIFEST_FILE, RECORD_FILE, RESTORABLE_LABEL_FILE, TABLESPACES_SUBDIR, tar_archive)
from ansible_collections.pgexclusive.backup.plugins.module_utils.beneath import NotRegularFile, open_file_beneath
from ansible_collections.pgexclusive.backup.plugins.module_utils.catalog.decide import clean, needs_copy_checks
from ansible_collections.pgexclusive.backup.plugins.module_utils.errors import BackupError
from ansible_collections.pgexclusive.backup.plugins.module_utils.manifest import manifest_files, verify_copy
from ansible_collections.pgexclusive.backup.plugins.module_utils.restore.prove import missing_wal, wal_needed
from ansible_collections.pgexclusive.backup.plugins.module_utils.retention import copy_disagreement
from ansible_collections.pgexclusive.backup.plugins.module_utils.wal.arithmetic import (
    infer_segment_size, segment_number)

# backup.json of a real backup is a few KiB, its drill history included; more is not a record this collection wrote.
MAX_RECORD_BYTES = 4 << 20
# A manifest lists every file of the copy in about 200 bytes; 1 GiB is five million files.
MAX_MANIFEST_BYTES = 1 << 30
# More segments than 16 TiB of 16 MiB WAL between a start and a stop is a record that lies.
MAX_SEGMENTS = 1 << 20


def entries(dest):
    """(name, kind) of each entry of ``dest`` that is a directory or a symbolic link; other files are no backups."""
    try:
        names = sorted(os.listdir(dest))
    except (IOError, OSError) as exc:
        raise BackupError("Cannot list the backups in %s: %s." % (dest, exc.strerror or exc),
                          "Give the directory that holds the backups (the role's exclusive_backup_dest), and run "
                          "as a user who may read it (become: true).")
    found = []
    for name in names:
        try:
            mode = os.lstat(os.path.join(dest, name)).st_mode
        except OSError:
            continue  # removed while listed: a retention or a drill's throwaway that just ended
        if stat.S_ISLNK(mode):
            found.append((name, "link"))
        elif stat.S_ISDIR(mode):
            found.append((name, "directory"))
    return found


def read_beneath(dest, names, limit):
    """The bytes of dest/``names``..., no link followed; None when absent. Raises ValueError saying why not."""
    try:
        fd = open_file_beneath(dest, names)
    except NotRegularFile:
        raise ValueError("it is not a regular file")
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            return None
        if exc.errno == errno.ELOOP:
            raise ValueError("it is a symbolic link, not followed")
        raise ValueError(exc.strerror or str(exc))
    st = os.fstat(fd)
    with os.fdopen(fd, "rb") as handle:
        if st.st_size > limit:
            raise ValueError("it is %d bytes, more than the %d this reads" % (st.st_size, limit))
        return handle.read(limit + 1)


def read_record(dest, name):
    """(raw backup.json as a JSON value, None) or (None, why not: 'missing' or the reason)."""
    try:
        raw = read_beneath(dest, [name, RECORD_FILE], MAX_RECORD_BYTES)
    except ValueError as exc:
        return None, str(exc)
    if raw is None:
        return None, "missing"
    if len(raw) > MAX_RECORD_BYTES:
        return None, "it grew past %d bytes while read" % MAX_RECORD_BYTES
    try:
        return json.loads(raw.decode("utf-8")), None
    except (ValueError, RecursionError) as exc:
        return None, "it is not JSON (%s)" % str(exc)[:200]


def linked_tops(dest, name):
    """The copy's top-level entries that are symbolic links: the checks below read none through a link."""
    backup_dir = os.path.join(dest, name)
    try:
        names = os.listdir(backup_dir)
    except OSError:
        return []
    tops = [n for n in names if n in (DATA_SUBDIR, TABLESPACES_SUBDIR, MANIFEST_FILE, RESTORABLE_LABEL_FILE)
            or tar_archive(n)]
    return sorted(n for n in tops if os.path.islink(os.path.join(backup_dir, n)))


def observe(dest, name, archive_for=lambda record: None, verify_files=False):
    """What catalog/decide.py::judge needs to know of dest/``name``, read without writing or following a link.

    ``archive_for(record)`` is the WAL archive directory of the record's cluster, or None: WAL not checked.
    """
    path = os.path.join(dest, name)
    if os.path.islink(path):
        try:
            return {"entry": "link", "link_to": os.readlink(path)}
        except OSError:
            return {"entry": "link", "link_to": "somewhere no longer known: it was just removed or replaced"}
    raw, why = read_record(dest, name)
    record, wrong = clean(raw)
    seen = {"entry": "directory", "record": record, "wrong_fields": wrong,
            "record_error": why or (None if record is not None else "it is JSON, but no object")}
    if not needs_copy_checks(record):
        return seen
    links = linked_tops(dest, name)
    if links:
        seen["copy"] = "%s in the backup directory %s a symbolic link, not followed" % (
            ", ".join(links), "is" if len(links) == 1 else "are")
        return seen
    try:
        seen["copy"] = copy_disagreement(path, record)
    except (IOError, OSError) as exc:
        seen["copy"] = "its copy cannot be read: %s" % (exc.strerror or exc)
    seen["manifest"] = manifest_state(dest, name, record)
    if verify_files and not seen["manifest"]:
        seen["files"] = files_state(path)
    archive_dir = archive_for(record)
    if archive_dir and not record.get("wal_included"):
        seen["wal"] = wal_state(record, archive_dir)
    return seen


def manifest_state(dest, name, record):
    """None (sound, or none expected: a command method's snapshot has none), 'missing', or why it is damaged."""
    try:
        raw = read_beneath(dest, [name, MANIFEST_FILE], MAX_MANIFEST_BYTES)
    except ValueError as exc:
        return "%s %s" % (MANIFEST_FILE, exc)
    if raw is None:
        return None if record.get("method") == "command" and not record.get("manifest") else "missing"
    try:
        manifest_files(raw, os.path.join(dest, name, MANIFEST_FILE))
    except BackupError as exc:
        return exc.msg
    return None


def files_state(path):
    """How the copy's files differ from their backup_manifest (manifest.py::verify_copy), or None."""
    try:
        verify_copy(path)
    except BackupError as exc:
        return exc.msg
    except (IOError, OSError) as exc:
        return "the copy cannot be read: %s" % (exc.strerror or exc)
    return None


def wal_state(record, archive_dir):
    """{missing: the first segment from start to stop not in ``archive_dir``} or {error: why none can be named}."""
    start, stop = record.get("start_wal_file"), record.get("stop_wal_file")
    try:
        size = infer_segment_size(record.get("start_lsn"), start) if start else None
        count = segment_number(stop, size)[1] - segment_number(start, size)[1] if size and stop else None
    except ValueError as exc:
        return {"error": str(exc)}
    if count is None:
        return {"error": "backup.json names no start and stop WAL file that fit its start LSN"}
    if count > MAX_SEGMENTS:
        return {"error": "backup.json's WAL range, %s to %s, is %d segments long" % (start, stop, count)}
    try:
        missing = missing_wal(wal_needed(record), [archive_dir])
    except BackupError as exc:
        return {"error": exc.msg}
    return {"missing": missing, "archive": archive_dir} if missing else {}
