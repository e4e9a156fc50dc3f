# -*- coding: utf-8 -*-
# Copyright: pgexclusive.backup maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""backup_manifest in PostgreSQL's own JSON format (version 1), for plain-format copies.

pg_verifybackup (PostgreSQL 13+) checks a copy against it. Version 1 carries
no system identifier, so the 15, 16 and 18 tools all accept it. The
Manifest-Checksum is the SHA256 of every byte before the line that holds it,
up to and including the newline that ends the WAL-Ranges section: that is what
pg_verifybackup recomputes.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import hashlib
import json
import os
import time

from ansible_collections.pgexclusive.backup.plugins.module_utils.backup_layout import DATA_SUBDIR, MANIFEST_FILE
from ansible_collections.pgexclusive.backup.plugins.module_utils.durable import atomic_write
from ansible_collections.pgexclusive.backup.plugins.module_utils.errors import BackupError

# Paths pg_verifybackup ignores on disk by default; never listed.
NOT_LISTED_TOP = (MANIFEST_FILE, "pg_wal")


def last_modified(mtime):
    """'2026-11-21 10:56:35 GMT', the format pg_basebackup writes."""
    return time.strftime("%Y-%m-%d %H:%M:%S GMT", time.gmtime(mtime))


def file_entry(path, size, mtime, checksum_hex):
    return {"Path": path, "Size": size, "Last-Modified": last_modified(mtime),
            "Checksum-Algorithm": "SHA256", "Checksum": checksum_hex}


def _line(obj):
    # One JSON object per line, keys in PostgreSQL's order (dicts keep insertion order).
    return "{ " + ", ".join("%s: %s" % (json.dumps(k), json.dumps(v)) for k, v in obj.items()) + " }"


def render(files, wal_ranges):
    """The manifest text: ``files`` from file_entry, ``wal_ranges`` [{timeline, start_lsn, end_lsn}]."""
    body = '{ "PostgreSQL-Backup-Manifest-Version": 1,\n"Files": [\n'
    body += ",\n".join(_line(f) for f in files)
    body += "\n],\n"
    body += '"WAL-Ranges": [\n'
    body += ",\n".join(_line({"Timeline": int(r["timeline"]), "Start-LSN": r["start_lsn"], "End-LSN": r["end_lsn"]})
                       for r in wal_ranges)
    body += "\n],\n"
    checksum = hashlib.sha256(body.encode("utf-8")).hexdigest()
    return body + '"Manifest-Checksum": "%s"}\n' % checksum


def sha256_file(path, chunk=1 << 20):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while True:
            block = handle.read(chunk)
            if not block:
                break
            digest.update(block)
    return digest.hexdigest()


def walk_copy(data_dir, backup_dir):
    """Manifest entries for every file of a plain copy, following pg_tblspc links (as pg_verifybackup does).

    In a plain copy the links point at <backup>/tablespaces/<oid>. A link that
    leads out of ``backup_dir`` would make the manifest hash, and vouch for,
    live files that are not the backup's: it is refused.
    """
    inside = os.path.realpath(backup_dir)
    entries = []
    for root, dirs, files in os.walk(data_dir, followlinks=True, onerror=_raise):
        rel_root = os.path.relpath(root, data_dir)
        rel_root = "" if rel_root == "." else rel_root.replace(os.sep, "/") + "/"
        for name in dirs + files:
            _refuse_link_outside(os.path.join(root, name), inside)
        if not rel_root:
            dirs[:] = [d for d in dirs if d not in NOT_LISTED_TOP]
            files = [f for f in files if f not in NOT_LISTED_TOP]
        dirs.sort()
        for name in sorted(files):
            full = os.path.join(root, name)
            st = os.stat(full)
            entries.append(file_entry(rel_root + name, st.st_size, st.st_mtime, sha256_file(full)))
    return entries


def _refuse_link_outside(path, inside):
    if not os.path.islink(path):
        return
    target = os.path.realpath(path)
    if target != inside and not target.startswith(inside.rstrip(os.sep) + os.sep):
        raise BackupError(
            "%s in the copy is a symbolic link to %s, outside the backup directory %s: no manifest "
            "vouches for files that are not the backup's own." % (path, target, inside),
            "A plain copy keeps its tablespaces in <backup>/tablespaces/<oid> and a real pg_wal directory; "
            "this copy still points at live files: take a new backup with a copy that relinks them.")


def _raise(error):
    raise error


def write_manifest(backup_dir, timeline, start_lsn, end_lsn):
    """Write <backup_dir>/backup_manifest for the plain copy in <backup_dir>/data, atomically.

    Returns path, files, bytes and the pg_verifybackup command that checks the copy.
    """
    data_dir = os.path.join(backup_dir, DATA_SUBDIR)
    entries = walk_copy(data_dir, backup_dir)
    text = render(entries, [{"timeline": timeline, "start_lsn": start_lsn, "end_lsn": end_lsn}])
    path = atomic_write(os.path.join(backup_dir, MANIFEST_FILE), text, 0o644)
    # Without the WAL in data/pg_wal, pg_verifybackup must be told not to look for it (-n).
    wal_inside = bool(os.listdir(os.path.join(data_dir, "pg_wal")))
    return {"path": path, "files": len(entries), "bytes": sum(e["Size"] for e in entries),
            "verify": "pg_verifybackup -m %s %s%s" % (path, data_dir, "" if wal_inside else " -n")}
