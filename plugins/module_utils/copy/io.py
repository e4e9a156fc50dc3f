# -*- coding: utf-8 -*-
# Copyright: pgexclusive.backup maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""The copy's own I/O: the roots it reads, a file tree copied without following links, and streams gzipped in threads.

All run as root over a live data directory that the server's OS user can
change while it is read. Each root (the data directory, a tablespace) is
opened once, where it is checked, and read only through that descriptor
(SourceRoot). The tree copy and the gzip use several threads where the work
leaves Python's lock (sendfile, zlib), so that one stream's waits overlap another's.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import collections
import errno
import os
import stat
import struct
import subprocess
import tempfile
import threading
import zlib

from ansible_collections.pgexclusive.backup.plugins.module_utils.backup_files import is_excluded
from ansible_collections.pgexclusive.backup.plugins.module_utils.errors import BackupError

# Parallel gzip: blocks of the tar stream deflated at gzip's default level, joined in one gzip member.
GZIP_BLOCK = 4 << 20
GZIP_LEVEL = 6
# Bytes one sendfile call copies at most (Linux stops at 2 GiB anyway).
SEND_CHUNK = 64 << 20
# What an entry of the source must still be when the copy opens it.
KINDS = {"file": stat.S_ISREG, "directory": stat.S_ISDIR}
FAILED_HINT = "Fix the cause (space, permissions, the destination) and run the backup again."
# A root of the copy: a directory, never a link in its place; closed when this process runs another program.
ROOT_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class SourceRoot(object):
    """A directory the copy reads (the data directory, a tablespace), open from its check to the copy's end.

    The server's OS user can rename the directory and put a link in its place
    at any time, so its name is resolved once: the checks look at ``stat``
    (fstat of the descriptor), the tree copy descends from ``fd``, and an
    external tool reads ``source``, /proc/self/fd/<fd>, with the descriptor
    passed to it (pass_fds): that path leads to the directory opened, whatever
    its name leads to by then. ``path`` is the name it was opened by, for
    messages and the record.
    """

    def __init__(self, path, fd):
        self.path = path
        self.fd = fd
        self.stat = os.fstat(fd)
        self.source = "/proc/self/fd/%d" % fd

    def close(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def open_root(path):
    """The directory ``path`` as a SourceRoot; OSError as open(2) gives it, ELOOP when a link is there now."""
    try:
        root = SourceRoot(path, os.open(path, ROOT_FLAGS))
    except OSError as exc:
        # With O_DIRECTORY, Linux refuses a link with ENOTDIR: say that it was a link.
        if exc.errno == errno.ENOTDIR and os.path.islink(path):
            raise OSError(errno.ELOOP, "a symbolic link", path)
        raise
    try:
        through = os.stat(root.source)
    except OSError:
        through = None
    if through is None or (through.st_dev, through.st_ino) != (root.stat.st_dev, root.stat.st_ino):
        root.close()
        # Without /proc the tools would read nothing, or something else, under that name.
        raise BackupError("%s does not lead to the directory opened as %s: the copy reads through /proc/self/fd, "
                          "which this host does not provide. Nothing was copied." % (root.source, path),
                          "Mount /proc (procfs) where the copy runs, then take the backup again.")
    return root


def run_argv(argv, env=None, pass_fds=()):
    """Run ``argv``; ``pass_fds`` are the SourceRoot descriptors it reads through their ``source``."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, pass_fds=pass_fds)
    out, err = proc.communicate()
    return proc.returncode, out.decode("utf-8", "replace"), err.decode("utf-8", "replace")


def gzip_parallel(argv, output, workers, block=GZIP_BLOCK, pass_fds=()):
    """Run ``argv``, which writes a tar stream to stdout, and gzip that stream into ``output`` with ``workers`` threads.

    Returns tar's (exit code, stderr); see pipe_stream.
    """
    try:
        with open(output, "wb") as out:
            rc, err, _size = pipe_stream(argv, out, workers, block, pass_fds)
    except (IOError, OSError) as exc:
        raise BackupError("The copy failed on %s: %s" % (output, exc), FAILED_HINT)
    return rc, err


def pipe_stream(argv, out, gzip_workers=0, block=GZIP_BLOCK, pass_fds=()):
    """Run ``argv``, which writes a stream to stdout, and write that stream to the binary file object ``out``.

    With ``gzip_workers``, the stream is gzipped in that many threads, as
    pigz does: each block is deflated on its own and ends on a byte boundary
    (a sync flush), so the blocks join into one deflate stream inside one
    gzip member. One member, because PostgreSQL's own readers
    (pg_verifybackup -F t) stop at the end of the first member of a
    concatenated gzip file, or loop on it. zlib does not hold Python's lock
    while it compresses, so the threads use the cores. A failed write ends
    ``argv`` and raises its error. ``pass_fds`` as for run_argv. Returns
    ``argv``'s (exit code, stderr) and the bytes written.
    """
    written = 0
    with tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=errors, pass_fds=pass_fds)
        try:
            with proc.stdout:
                member = _GzipMember() if gzip_workers else None
                if member:
                    written += _write(out, member.header())
                in_flight = collections.deque()
                while True:
                    data = proc.stdout.read(block)
                    if not data:
                        break
                    if not member:
                        written += _write(out, data)
                        continue
                    member.add(data)
                    # The next block was read while ``gzip_workers`` blocks compressed: tar never waits for zlib.
                    if len(in_flight) >= gzip_workers:
                        written += _write(out, _deflated(in_flight.popleft()))
                    in_flight.append(_DeflateBlock(data))
                    in_flight[-1].start()
                while in_flight:
                    written += _write(out, _deflated(in_flight.popleft()))
                if member:
                    written += _write(out, member.trailer())
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        rc = proc.wait()
        errors.seek(0)
        return rc, errors.read().decode("utf-8", "replace"), written


def _write(out, data):
    out.write(data)
    return len(data)


class _GzipMember(object):
    """The header and trailer (RFC 1952) around the deflated blocks; the CRC is taken over the blocks in order."""

    def __init__(self):
        self.crc = 0
        self.size = 0

    @staticmethod
    def header():
        # deflate, no flags, no time, unknown extra flags, OS Unix
        return b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03"

    def add(self, data):
        self.crc = zlib.crc32(data, self.crc)
        self.size += len(data)

    def trailer(self):
        final = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, -15).flush(zlib.Z_FINISH)   # an empty last block
        return final + struct.pack("<II", self.crc & 0xffffffff, self.size & 0xffffffff)


class _DeflateBlock(threading.Thread):
    def __init__(self, data):
        threading.Thread.__init__(self)
        self.data = data
        self.result = None

    def run(self):
        compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, -15)   # -15: raw deflate, no header
        self.result = compressor.compress(self.data) + compressor.flush(zlib.Z_SYNC_FLUSH)
        self.data = None


def _deflated(block):
    block.join()
    if block.result is None:
        raise OSError("compressing a block failed (see the module's stderr)")
    return block.result


def copy_tree(root, target, extra=(), prefix="", workers=1, cancel=None):
    """Copy the SourceRoot ``root`` into the new directory ``target``, leaving out what backup_files excludes.

    The copy runs as root in a tree the server's OS user can change while it
    is read, so no symbolic link below ``root`` is ever followed: each
    directory and file is opened relative to its parent's descriptor, from
    ``root.fd`` down, with O_NOFOLLOW. A link seen by the walk is copied as a link; an entry that
    became a link afterwards fails the copy, since following it would copy
    its target, with the original file's owner and mode, into the backup.
    Files that vanish are skipped: normal on a live cluster (WAL replay
    recreates them). Anything unreadable fails the copy: a backup never
    silently lacks a file. ``prefix`` makes the relative paths those of the
    data directory, so the exclusion list applies the same way inside
    tablespaces. With ``workers`` > 1 the files are shared out by size among
    that many threads: the kernel copies (sendfile) without holding Python's
    lock, so one stream's waits on the disk overlap with another's. Once
    ``cancel`` (a threading.Event) is set, no further file is started.
    Returns how many files were copied.
    """
    cancel = cancel or threading.Event()
    source = root.path
    jobs = []
    try:
        os.makedirs(target, 0o700)
        _copy_meta(root.stat, target)
        # Errors reading the source are BackupErrors already: what is left is about the destination.
        _walk(root.fd, source, (), target, extra, prefix, jobs)
    except OSError as exc:
        raise BackupError("The copy into %s failed: %s" % (target, exc), FAILED_HINT)
    if workers <= 1 or len(jobs) < 2:
        return copy_files(root.fd, source, jobs, cancel)
    return _copy_in_parallel(root.fd, source, balanced(jobs, workers), cancel)


def _walk(dir_fd, source, parts, target, extra, prefix, jobs):
    """Make the subdirectories of ``source``/``parts`` (open as ``dir_fd``) in ``target``, its files into ``jobs``."""
    try:
        names = sorted(os.listdir(dir_fd))
    except OSError as exc:
        raise _read_error(os.path.join(source, *parts), exc)
    for name in names:
        rel = parts + (name,)
        relpath = prefix + "/".join(rel)
        # The live backup_label is replaced by the staged one (copy_methods.FileCopyMethod).
        if is_excluded(relpath, extra, staged=True):
            continue
        path = os.path.join(source, *rel)
        dst = os.path.join(target, *rel)
        try:
            st = os.lstat(name, dir_fd=dir_fd)
            link = os.readlink(name, dir_fd=dir_fd) if stat.S_ISLNK(st.st_mode) else None
        except OSError as exc:
            _vanished(path, exc)
            continue
        if link is not None:
            # pg_tblspc/<oid> too: copy_methods.relink_tablespaces points it at the copy's tablespace afterwards.
            os.symlink(link, dst)
            chown_like(dst, st)
        elif stat.S_ISDIR(st.st_mode):
            sub = _open_nofollow(name, dir_fd, path, "directory")
            if sub is None:
                continue
            try:
                st = os.fstat(sub)
                os.mkdir(dst, 0o700)
                _copy_meta(st, dst)
                _walk(sub, source, rel, target, extra, prefix, jobs)
            finally:
                os.close(sub)
        elif stat.S_ISREG(st.st_mode):
            jobs.append((st.st_size, rel, path, dst))


def balanced(jobs, workers):
    """Share (size, ...) jobs out among ``workers`` lists of nearly equal total size (largest first)."""
    bins = [[0, []] for _worker in range(workers)]
    for job in sorted(jobs, key=lambda j: j[0], reverse=True):
        lightest = min(bins, key=lambda b: b[0])
        lightest[0] += job[0]
        lightest[1].append(job)
    return [jobs_of_bin for _total, jobs_of_bin in bins if jobs_of_bin]


def _copy_in_parallel(root_fd, source, shares, cancel):
    counts, errors = [], []

    def work(share):
        try:
            counts.append(copy_files(root_fd, source, share, cancel))
        except Exception as exc:   # any error, not only BackupError: a dead worker must not look like a done one
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(share,)) for share in shares]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return sum(counts)


def copy_files(root_fd, source, jobs, cancel):
    """Copy the walked ``jobs`` (size, relative path, path, destination) below ``root_fd``; the count copied.

    Every source is opened again below the walk's directory fd, without following links, so a file
    swapped for a link between the walk and the copy fails the copy (tests run their swaps here).
    """
    count = 0
    for _size, rel, path, dst in jobs:
        if cancel.is_set():
            raise BackupError("The copy of %s was cancelled." % source, FAILED_HINT)
        src = _open_below(root_fd, source, rel)
        if src is None:
            continue
        try:
            _copy_fd(src, path, dst)
        finally:
            os.close(src)
        count += 1
    return count


def _open_below(root_fd, source, rel):
    """Open the file ``source``/``rel`` one component at a time from ``root_fd``; None when it vanished.

    Opening each directory with O_NOFOLLOW is what keeps a directory swapped
    for a link after the walk from leading the copy elsewhere: O_NOFOLLOW on
    the whole path would guard only the file's own name.
    """
    fd = root_fd
    try:
        for depth in range(len(rel)):
            kind = "file" if depth == len(rel) - 1 else "directory"
            opened = _open_nofollow(rel[depth], fd, os.path.join(source, *rel[:depth + 1]), kind)
            if fd != root_fd:
                os.close(fd)
            fd = opened
            if fd is None:
                return None
        return fd
    except BaseException:
        if fd not in (root_fd, None):
            os.close(fd)
        raise


def _open_nofollow(name, dir_fd, path, kind):
    """Open ``name`` (at ``path``) in the directory ``dir_fd`` for reading, following no link; None when it vanished.

    O_NONBLOCK: a FIFO swapped in must fail the type check, not hang the open.
    """
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dir_fd)
    except OSError as exc:
        _vanished(path, exc)
        return None
    if not KINDS[kind](os.fstat(fd).st_mode):
        os.close(fd)
        raise BackupError("%s is no longer a %s: it was replaced while it was copied." % (path, kind),
                          "Find out what changed the data directory during the backup, then take the backup again.")
    return fd


def _copy_fd(src, path, dst):
    """Copy the open file ``src`` (at ``path``) into the new file ``dst``, with its mode, times and owner.

    ``dst`` is created 0600 and must not exist (O_EXCL, O_NOFOLLOW): nothing
    is written through a link planted in the copy, and the data is never
    readable by others before the final mode is set.
    """
    try:
        st = os.fstat(src)
        out = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            offset = 0
            while True:
                sent = os.sendfile(out, src, offset, SEND_CHUNK)
                if not sent:
                    break
                offset += sent
            if os.geteuid() == 0:
                os.fchown(out, st.st_uid, st.st_gid)
            # After the owner: chown clears set-id bits.
            os.fchmod(out, stat.S_IMODE(st.st_mode))
            os.utime(out, ns=(st.st_atime_ns, st.st_mtime_ns))
        finally:
            os.close(out)
    except OSError as exc:
        raise BackupError("The copy of %s to %s failed: %s" % (path, dst, exc), FAILED_HINT)


def _vanished(path, exc):
    """Return when ``path`` vanished (normal on a live cluster); raise why it could not be read otherwise."""
    if exc.errno != errno.ENOENT:
        raise _read_error(path, exc)


def _read_error(path, exc):
    if exc.errno == errno.ELOOP:
        return BackupError(
            "%s became a symbolic link during the copy. It was not followed, and the copy is incomplete." % path,
            "Something replaced it while the backup ran (PostgreSQL does not): find out what, then take the "
            "backup again.")
    if exc.errno in (errno.EACCES, errno.EPERM):
        return BackupError("Could not read %s: %s; the copy would be incomplete." % (path, exc.strerror),
                           "Run the copy as root or as the server's OS user (become: true).")
    return BackupError("The copy failed on %s: %s" % (path, exc), FAILED_HINT)


def _copy_meta(st, dst):
    chown_like(dst, st)
    os.chmod(dst, stat.S_IMODE(st.st_mode))
    os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns))


def chown_like(path, st):
    if hasattr(os, "lchown") and os.geteuid() == 0:
        os.lchown(path, st.st_uid, st.st_gid)
