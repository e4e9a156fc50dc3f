# -*- coding: utf-8 -*-
# Copyright: pgexclusive.backup maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""backup_manifest in PostgreSQL's own JSON format (version 1), for plain and tar copies.

pg_verifybackup (PostgreSQL 13+) checks a plain copy against it, and from 18
on a tar copy too. Version 1 carries no system identifier, so the 15, 16 and
18 tools all accept it. A tar copy's entries describe the bytes inside its
archives, read back after they were written: files of <oid>.tar are listed as
pg_tblspc/<oid>/<path>, as pg_verifybackup 18 looks them up. The
Manifest-Checksum is the SHA256 of every byte before the line that holds it,
up to and including the newline that ends the WAL-Ranges section: that is what
pg_verifybackup recomputes.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import contextlib
import gzip
import hashlib
import json
import os
import posixpath
import shlex
import stat
import subprocess
import tarfile
import tempfile
import threading
import time
import zlib

from ansible_collections.pgexclusive.backup.plugins.module_utils.backup_layout import (
    DATA_SUBDIR, MANIFEST_FILE, RECORD_FILE, TABLESPACES_SUBDIR, copy_format, tar_archive)
from ansible_collections.pgexclusive.backup.plugins.module_utils.durable import atomic_write
from ansible_collections.pgexclusive.backup.plugins.module_utils.errors import BackupError
from ansible_collections.pgexclusive.backup.plugins.module_utils.repository import REMOTE_HINT

# What the recorded tar check command needs, said in the command itself.
TAR_VERIFY_NEEDS = "  # needs pg_verifybackup of PostgreSQL 18 or later (older ones read plain copies only), for any major"
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


CHUNK = 1 << 20


def sha256_file(path):
    """The file's SHA-256; a FIFO or device in a copy (untrusted input) is refused, never opened blocking or read."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise BackupError("%s in the copy is not a regular file: no backup holds a FIFO, socket or device." % path,
                              "Someone or something changed this copy after it was taken: keep it aside for a person "
                              "to look at, and restore another backup.")
        return sha256_stream(handle)


def sha256_stream(handle):
    digest = hashlib.sha256()
    while True:
        block = handle.read(CHUNK)
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


def member_path(name, prefix=""):
    """A tar member's name as the manifest lists it: './base/1/112' -> 'base/1/112', with ``prefix`` before it.

    None for a name the manifest never lists: the archive's top directory, and
    in base.tar what a plain manifest leaves out too (NOT_LISTED_TOP).
    """
    path = posixpath.normpath("/" + name).lstrip("/")
    if not path or path == ".":
        return None
    if not prefix and path.split("/", 1)[0] in NOT_LISTED_TOP:
        return None
    return prefix + path


def tablespace_prefix(oid):
    return "pg_tblspc/%s/" % oid


def archive_entries(stream, prefix=""):
    """Manifest entries for the regular files of the uncompressed tar ``stream``, read once, in archive order.

    Directories and symbolic links (pg_tblspc/<oid> in base.tar) are not
    files to pg_verifybackup either: never listed.
    """
    entries = []

    def visit(tar, member):
        path = member_path(member.name, prefix)
        if path is not None and member.isreg():
            entries.append(file_entry(path, member.size, member.mtime, sha256_stream(tar.extractfile(member))))

    read_members(stream, visit)
    return entries


def read_members(stream, visit):
    """Call ``visit(tar, member)`` for each member of the uncompressed tar ``stream``, read once, in archive order.

    tarfile ends quietly at a header cut short, so the archive's end is
    checked here: a manifest of a truncated archive would vouch for a backup
    that lacks files, and a restore of one would lay out part of a copy.
    """
    counted = _Counted(stream)
    # Reads of CHUNK, not tarfile's default 10 KiB: fewer calls in Python per byte hashed.
    with tarfile.open(fileobj=counted, mode="r|", bufsize=CHUNK) as tar:
        for member in tar:
            visit(tar, member)
        end = tar.offset
    # The end-of-archive blocks and tar's padding, read to the end (and a decompressing process ends of itself).
    while counted.read(CHUNK):
        pass
    if counted.bytes % tarfile.BLOCKSIZE or counted.bytes < end + 2 * tarfile.BLOCKSIZE:
        raise tarfile.ReadError("it ends after %d bytes, without tar's end-of-archive blocks: it was cut short"
                                % counted.bytes)


class _Counted(object):
    """A binary stream that counts the bytes read from it."""

    def __init__(self, stream):
        self.stream = stream
        self.bytes = 0

    def read(self, size=-1):
        data = self.stream.read(size)
        self.bytes += len(data)
        return data


def read_archive(path, compression, prefix=""):
    """archive_entries of the archive ``path``, decompressed as a stream (archive_stream)."""
    try:
        with archive_stream(path, compression) as stream:
            return archive_entries(stream, prefix)
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise unreadable(path, exc)


@contextlib.contextmanager
def archive_stream(path, compression, read_to_end=True):
    """The uncompressed bytes of the archive ``path``, as a binary stream read once (decompressed)."""
    with open(path, "rb") as handle:
        with decompressed(handle, compression, path, read_to_end) as stream:
            yield stream


@contextlib.contextmanager
def decompressed(handle, compression, name, read_to_end=True):
    """The uncompressed bytes of the binary stream ``handle`` (an archive called ``name``), read once.

    gzip is read with Python's gzip module, not tarfile's 'r|gz': the copy
    writes one gzip member per block (copy_io.pipe_stream), and 'r|gz' stops
    after the first. zstd is read through ``zstd -dc`` in a process of its own,
    fed straight from a file, or by a thread from a stream that is none (an
    archive inside the read-back of a repository); a reader that stops early
    (``read_to_end`` false) ends it, and its exit status then says nothing.
    Every reader of an archive (the manifest's writer, its check, the
    restore's extraction) goes through here.
    """
    if compression == "gzip":
        with gzip.GzipFile(fileobj=handle, mode="rb") as stream:
            yield stream
        return
    if compression != "zstd":
        yield handle
        return
    try:
        fileno = handle.fileno()
    except (AttributeError, IOError, OSError, ValueError):
        fileno = None
    with tempfile.TemporaryFile() as errors:
        try:
            proc = subprocess.Popen(["zstd", "-dcq"], stdin=subprocess.PIPE if fileno is None else fileno,
                                    stdout=subprocess.PIPE, stderr=errors)
        except OSError as exc:
            raise unreadable(name, "zstd could not run: %s" % exc)
        feeder = _Feeder(handle, proc.stdin) if fileno is None else None
        try:
            with proc.stdout:
                yield proc.stdout
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        finally:
            if feeder:
                feeder.join()
        if not read_to_end:
            proc.kill()
            proc.wait()
        elif proc.wait() != 0:
            errors.seek(0)
            raise unreadable(name, "zstd exited with %d: %s" % (
                proc.returncode, errors.read().decode("utf-8", "replace").strip()[-2000:]))
        elif feeder and feeder.error:
            raise unreadable(name, feeder.error)


class _Feeder(threading.Thread):
    """Copies a stream into a process's stdin, then closes it; a process that stops reading ends the copy."""

    def __init__(self, source, sink):
        threading.Thread.__init__(self)
        self.daemon = True
        self.source, self.sink, self.error = source, sink, None
        self.start()

    def run(self):
        try:
            while True:
                block = self.source.read(CHUNK)
                if not block:
                    break
                self.sink.write(block)
        except (IOError, OSError, ValueError, tarfile.TarError) as exc:
            self.error = exc
        finally:
            try:
                self.sink.close()
            except (IOError, OSError):
                pass


def unreadable(path, why):
    return BackupError("%s could not be read back for the backup_manifest: %s" % (path, why),
                       "The archive the copy wrote is damaged or zstd is missing on the database host: "
                       "install zstd for zstd compression, check the destination's disk, and take a new backup.")


def walk_archives(backup_dir):
    """Manifest entries for a tar copy: base.tar's files, then each <oid>.tar's, by oid (pg_wal.tar is WAL)."""
    archives = []
    for name in os.listdir(backup_dir):
        kind = tar_archive(name)
        if kind and kind[0] != "pg_wal":
            archives.append((kind[0] != "base", int(kind[0]) if kind[0].isdigit() else 0, name, kind))
    entries = []
    for _tablespace, _oid, name, (stem, compression) in sorted(archives):
        prefix = "" if stem == "base" else tablespace_prefix(stem)
        entries.extend(read_archive(os.path.join(backup_dir, name), compression, prefix))
    return entries


def write_manifest(backup_dir, timeline, start_lsn, end_lsn):
    """Write <backup_dir>/backup_manifest for the copy there (plain: data/; tar: base.tar...), atomically.

    Returns path, files, bytes, the pg_verifybackup command that checks the copy and the seconds it took.
    """
    started = time.monotonic()
    fmt = copy_format(backup_dir)
    if fmt is None:
        raise BackupError("%s holds neither data/ nor base.tar: there is no copy here to write a backup_manifest for."
                          % backup_dir, "Write the manifest on the host that holds the copy, after the copy.")
    data_dir = os.path.join(backup_dir, DATA_SUBDIR)
    _fmt, entries = copy_entries(backup_dir)
    # Without the WAL in data/pg_wal, pg_verifybackup must be told not to look for it (-n).
    wal_inside = fmt == "plain" and bool(os.listdir(os.path.join(data_dir, "pg_wal")))
    return _write(backup_dir, backup_dir, fmt, entries, wal_inside, (timeline, start_lsn, end_lsn), started)


def write_read_back_manifest(backup_dir, remote, outputs, timeline, start_lsn, end_lsn):
    """Write <backup_dir>/backup_manifest for the copy in the repository on another host, read back over ssh.

    The copy's bytes passed through rsync or ssh, not through a reader here,
    so the manifest is made from what the repository holds: one ``tar -c`` of
    the copy's ``outputs`` (data/ and tablespaces/, or the archives) on the
    repository host, read once and checksummed here as the local walkers do.
    It runs after the stop: no server waits in backup mode for it. send_record
    then puts the manifest into the repository with the record; include_wal's
    WAL goes to <label>/pg_wal there, never into data/pg_wal.
    """
    started = time.monotonic()
    remote_dir = remote.backup_path(backup_dir)
    fmt, entries = read_back(remote, remote_dir, outputs)
    return _write(backup_dir, remote_dir, fmt, entries, False, (timeline, start_lsn, end_lsn), started,
                  remote.location(remote_dir))


def _write(backup_dir, copy_dir, fmt, entries, wal_inside, wal_range, started, read_back_from=None):
    timeline, start_lsn, end_lsn = wal_range
    text = render(entries, [{"timeline": timeline, "start_lsn": start_lsn, "end_lsn": end_lsn}])
    path = atomic_write(os.path.join(backup_dir, MANIFEST_FILE), text, 0o644)
    manifest_path = os.path.join(copy_dir, MANIFEST_FILE)
    if fmt == "plain":
        verify = "pg_verifybackup -m %s %s%s" % (manifest_path, os.path.join(copy_dir, DATA_SUBDIR),
                                                 "" if wal_inside else " -n")
    else:
        verify = verify_tar_command(manifest_path, copy_dir)
    result = {"path": path, "files": len(entries), "bytes": sum(e["Size"] for e in entries), "verify": verify,
              "format": fmt, "duration": round(time.monotonic() - started, 3)}
    if read_back_from:
        result.update(read_back_from=read_back_from, verify_on="the repository host, or a fetched copy")
    return result


def read_back(remote, remote_dir, outputs):
    """(format, manifest entries) of the copy ``outputs`` in ``remote_dir`` on the repository ``remote``.

    Plain: data/<path> is listed as <path> (top-level pg_wal and
    backup_manifest left out, as walk_copy does) and tablespaces/<oid>/<path>
    as pg_tblspc/<oid>/<path>; tar: each archive's members, as walk_archives
    lists them. Links are never followed: a plain copy's pg_tblspc/<oid> is
    a link, and its files are those under tablespaces/<oid>.
    """
    names = sorted(outputs)
    archives = [(name, tar_archive(name)) for name in names if tar_archive(name)]
    fmt = "tar" if archives and len(archives) == len(names) else "plain"
    if fmt == "plain" and set(names) - {DATA_SUBDIR, TABLESPACES_SUBDIR} or not names:
        raise BackupError("The copy in %s is %s: neither data/ (and tablespaces/) nor tar archives, so no "
                          "backup_manifest can be read back." % (remote.location(remote_dir), names or "empty"),
                          "Take the backup with the tar or rsync method.")
    by_archive = {}
    entries = []

    def visit(tar, member):
        if not member.isreg():
            return
        name = posixpath.normpath(member.name)
        kind = tar_archive(name) if fmt == "tar" else None
        if kind:
            stem, compression = kind
            with decompressed(tar.extractfile(member), compression, name) as stream:
                by_archive[name] = archive_entries(stream, "" if stem == "base" else tablespace_prefix(stem))
            return
        top, rest = (name.split("/", 1) + [""])[:2]
        if top == TABLESPACES_SUBDIR:
            oid, rest = (rest.split("/", 1) + [""])[:2]
            path = member_path(rest, tablespace_prefix(oid))
        else:
            path = member_path(rest) if top == DATA_SUBDIR else None
        if path is not None:
            entries.append(file_entry(path, member.size, member.mtime, sha256_stream(tar.extractfile(member))))

    script = "cd %s && exec tar -cf - %s" % (shlex.quote(remote_dir), " ".join(shlex.quote(n) for n in names))
    location = remote.location(remote_dir)
    with tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen(remote.command(script), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=errors)
        try:
            with proc.stdout:
                read_members(proc.stdout, visit)
        except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
            proc.kill()
            proc.wait()
            errors.seek(0)
            raise not_read_back(location, "%s %s" % (exc, errors.read().decode("utf-8", "replace").strip()[-2000:]))
        if proc.wait() != 0:
            errors.seek(0)
            raise not_read_back(location, "ssh or tar on the repository host exited with %d: %s" % (
                proc.returncode, errors.read().decode("utf-8", "replace").strip()[-2000:]))
    if fmt == "tar":
        # As walk_archives orders them: base.tar first, then each tablespace by oid.
        for name, (stem, _compression) in sorted(archives, key=lambda a: (a[1][0] != "base", _oid(a[1][0]))):
            if name not in by_archive:
                raise not_read_back(location, "%s was not in what the repository sent back" % name)
            entries.extend(by_archive[name])
    return fmt, entries


def not_read_back(location, why):
    return BackupError("The copy in %s could not be read back for the backup_manifest: %s" % (location, why),
                       REMOTE_HINT + " The repository host needs tar (as for the record), the database host zstd "
                       "for zstd compression.")


def _oid(stem):
    return int(stem) if stem.isdigit() else 0


def verify_tar_command(path, backup_dir):
    """pg_verifybackup 18+ on a tar copy: -n, since it reads no WAL from an archive; backup.json is ours, not PostgreSQL's.

    Older pg_verifybackup reads plain copies only (15's says "invalid option -- 'F'"), so the command says, as a
    shell comment that leaves it runnable as recorded, that it needs 18's, which checks a tar backup of any major.
    """
    return "pg_verifybackup -F t -n -i %s -m %s %s%s" % (RECORD_FILE, path, backup_dir, TAR_VERIFY_NEEDS)


def copy_entries(backup_dir):
    """(format, manifest entries of what the backup directory holds): what write_manifest lists, read the same way."""
    fmt = copy_format(backup_dir)
    if fmt == "plain":
        return fmt, walk_copy(os.path.join(backup_dir, DATA_SUBDIR), backup_dir)
    return fmt, walk_archives(backup_dir) if fmt == "tar" else []


def verify_copy(backup_dir):
    """Check every file of the backup against its backup_manifest, and the manifest against its own checksum.

    The files are read by the walkers that wrote the manifest (walk_copy,
    walk_archives): what the writer would list is what is checked. Raises
    BackupError naming the first difference; returns format, files, bytes.
    """
    path = os.path.join(backup_dir, MANIFEST_FILE)
    try:
        # Not through a link: the manifest is the backup's own file, never one it points at.
        with os.fdopen(os.open(path, os.O_RDONLY | os.O_NOFOLLOW), "rb") as handle:
            raw = handle.read()
    except (IOError, OSError) as exc:
        if not os.path.lexists(path):
            raise BackupError("The backup %s has no backup_manifest: nothing proves its files are those the backup "
                              "wrote." % backup_dir,
                              "Restore a backup that has one (tar, rsync and copy write it, also into a repository), "
                              "or restore this one unproved with verify: false.", reason="no backup_manifest")
        raise BackupError("Could not read the backup_manifest of %s: %s" % (backup_dir, exc),
                          "Run the restore as root, or check the backup directory's disk.")
    listed = manifest_files(raw, path)
    fmt, found = copy_entries(backup_dir)
    difference = first_difference(listed, found)
    if difference:
        raise BackupError("The backup %s does not match its backup_manifest: %s." % (backup_dir, difference),
                          "Keep this backup aside (a person may want to look at it) and restore another one.",
                          difference=difference)
    return {"format": fmt, "files": len(found), "bytes": sum(e["Size"] for e in found)}


def manifest_files(raw, path):
    """The Files of the manifest text ``raw`` ({path: entry}), once its Manifest-Checksum is found right.

    As pg_verifybackup reads it: the checksum covers every byte up to and
    including the newline before the last line.
    """
    body = raw[:raw.rfind(b"\n", 0, len(raw) - 1) + 1] if raw.endswith(b"\n") else b""
    try:
        doc = json.loads(raw.decode("utf-8"))
        recorded = doc["Manifest-Checksum"]
        files = doc["Files"]
    except (ValueError, KeyError, TypeError) as exc:
        raise BackupError("%s is no backup_manifest this check reads: %s" % (path, exc),
                          "Keep this backup aside and restore another one.")
    computed = hashlib.sha256(body).hexdigest()
    if not body or recorded != computed:
        raise BackupError("%s does not match its own Manifest-Checksum (%s, computed %s): the manifest was changed "
                          "or cut short." % (path, recorded, computed),
                          "Keep this backup aside and restore another one.")
    listed = {}
    for entry in files:
        name = entry.get("Path")
        if name is None and "Encoded-Path" in entry:
            name = bytes.fromhex(entry["Encoded-Path"]).decode("utf-8", "surrogateescape")
        if entry.get("Checksum-Algorithm") != "SHA256":
            raise BackupError("%s lists %s with the checksum algorithm %s; this check reads SHA256, which this "
                              "collection writes." % (path, name, entry.get("Checksum-Algorithm")),
                              "Check the backup with pg_verifybackup of its major, or restore with verify: false.")
        listed[name] = entry
    return listed


def first_difference(listed, found):
    """What first differs between the manifest's files ``listed`` ({path: entry}) and the entries ``found``, or None."""
    seen = set()
    for entry in found:
        name = entry["Path"]
        if name in seen or name not in listed:
            return "%s is in the copy but not in the manifest" % name
        seen.add(name)
        want = listed[name]
        if entry["Size"] != want["Size"]:
            return "%s has %d bytes, the manifest says %d" % (name, entry["Size"], want["Size"])
        if entry["Checksum"] != want["Checksum"]:
            return "%s does not have the SHA256 checksum the manifest lists" % name
    missing = sorted(set(listed) - seen)
    return "%s is missing from the copy" % missing[0] if missing else None
