# -*- coding: utf-8 -*-
# Copyright: pgexclusive.backup maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Which backup is the newest: by the WAL location it starts at, as its own copy's backup_label says.

backup.json's ``finished_at`` is a date that anyone who can write the
destination can set to 2099. The start LSN only grows along a cluster's
history, and it is written twice: in backup.json and in the copy's own
backup_label. A backup whose two disagree (or whose copy has no label) is not
a copy of what its record claims; the restore refuses it by name and
retention never counts it (restore/choose.py, retention.py). The fetch, which
sees only the records, orders them the same way; the restore then proves the
fetched copy.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import errno
import os
import tarfile
import zlib

from ansible_collections.pgexclusive.backup.plugins.module_utils.backup_label import (
    LABEL_FILE, TABLESPACE_MAP, parse_backup_label)
from ansible_collections.pgexclusive.backup.plugins.module_utils.backup_layout import (
    DATA_SUBDIR, RESTORABLE_LABEL_FILE, base_tar, copy_format, tar_archive)
from ansible_collections.pgexclusive.backup.plugins.module_utils.errors import BackupError
from ansible_collections.pgexclusive.backup.plugins.module_utils.manifest import archive_stream, member_path
from ansible_collections.pgexclusive.backup.plugins.module_utils.beneath import NotRegularFile, open_file_beneath
from ansible_collections.pgexclusive.backup.plugins.module_utils.wal.arithmetic import parse_lsn

# The copy's own files the choice and the restore's targets read before anything is laid out.
LABEL_FILES = (LABEL_FILE, TABLESPACE_MAP)
# Neither file is ever this large; a member that is would be no label.
MAX_LABEL_BYTES = 1 << 20


def record_lsn(record):
    """backup.json's start LSN as a number, or None when it has none that parses."""
    try:
        return parse_lsn((record or {}).get("start_lsn"))
    except ValueError:
        return None


def newest_first(records):
    """The labels of ``records`` (label -> backup.json) from the highest start LSN down; ties by label.

    A record without a start LSN sorts last: nothing says where it lies.
    """
    def key(label):
        lsn = record_lsn(records[label])
        return (lsn is not None, lsn or 0, label)
    return sorted(records, key=key, reverse=True)


def copy_label_files(backup_dir):
    """{name: text} of backup_label and tablespace_map as the copy itself holds them (absent: left out).

    A plain copy's are read beneath data/ without following a link; a tar
    copy's from base.tar's members, as a stream: nothing is written to disk.
    The label is staged last into base.tar, so a compressed archive is read
    through to its end.
    """
    fmt = copy_format(backup_dir)
    if fmt == "plain":
        return dict((name, text) for name, text in ((n, _plain_file(os.path.join(backup_dir, DATA_SUBDIR), n))
                                                    for n in LABEL_FILES) if text is not None)
    if fmt == "tar":
        return _tar_files(os.path.join(backup_dir, base_tar(backup_dir)))
    # The command method's snapshot lies elsewhere; the label it was given is kept beside backup.json.
    text = _plain_file(backup_dir, RESTORABLE_LABEL_FILE)
    return {LABEL_FILE: text} if text is not None else {}


def _plain_file(data, name):
    try:
        fd = open_file_beneath(data, [name])
    except OSError as exc:
        # A link or a FIFO under the name is not the copy's label file: read as absent, the copy disagrees.
        if isinstance(exc, NotRegularFile) or exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
            return None
        raise BackupError("Could not read %s of the backup: %s" % (os.path.join(data, name), exc),
                          "Run the restore as root.")
    with os.fdopen(fd, "rb") as handle:
        return handle.read(MAX_LABEL_BYTES).decode("utf-8", "replace")


def _tar_files(archive):
    found = {}
    try:
        with archive_stream(archive, tar_archive(os.path.basename(archive))[1], read_to_end=False) as stream:
            with tarfile.open(fileobj=stream, mode="r|") as tar:
                for member in tar:
                    name = member_path(member.name)
                    if name in LABEL_FILES and member.isreg() and member.size <= MAX_LABEL_BYTES:
                        found[name] = tar.extractfile(member).read().decode("utf-8", "replace")
                        if len(found) == len(LABEL_FILES):
                            break
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise BackupError("Could not read %s from %s: %s" % (LABEL_FILE, archive, exc),
                          "zstd must be installed for .zst backups; otherwise the archive is damaged: "
                          "keep the backup aside and restore another one.")
    return found


def label_disagreement(record, label_text):
    """How backup.json and the copy's backup_label (``label_text``, None: none) disagree on the start, or None."""
    if label_text is None:
        return "its copy holds no backup_label"
    start = parse_backup_label(label_text).get("start_lsn")
    try:
        copy_lsn = parse_lsn(start)
    except ValueError:
        return "its copy's backup_label names no START WAL LOCATION"
    if record_lsn(record) != copy_lsn:
        return "backup.json says the backup starts at %s, its copy's backup_label at %s" % (
            (record or {}).get("start_lsn") or "no LSN", start)
    return None


def disagreement_error(backup_dir, why):
    return BackupError(
        "The backup %s is not what its backup.json claims: %s. Nothing was restored." % (backup_dir, why),
        "Someone or something changed this backup or its record after it was taken: keep it aside for a person to "
        "look at, and restore another backup by naming it (backup_dir).", disagreement=why)
