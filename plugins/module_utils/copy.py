# -*- coding: utf-8 -*-
# Copyright: pgexclusive.backup maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""The filesystem copy of an exclusive backup: tar, rsync, copy or the user's command.

Layout of a backup directory ``<dest>/<label>/`` (DESIGN.md):

    tar:      base.tar[.gz|.zst]   the data directory
              <oid>.tar[.gz|.zst]  one per tablespace (as pg_basebackup names them)
    rsync,
    copy:     data/                the data directory; pg_tblspc/<oid> stay symbolic
                                   links, pointing at ../../tablespaces/<oid>
              tablespaces/<oid>/   the contents of each tablespace
    command:  whatever the user's command writes (a snapshot elsewhere, usually)

The copy always carries backup_label and tablespace_map. The backup_label in the
copy is written from the one read at copy time (never the live file changed):
on 15+ its method line is fixed (backup_label.restorable_label) so that recovery
waits for the end-of-backup record.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import collections
import os
import shutil
import stat
import subprocess
import tempfile
import threading
import time
import zlib

from ansible_collections.pgexclusive.backup.plugins.module_utils.backup_files import (
    ANYWHERE, EMPTY_DIRS, is_excluded, tar_exclude_args)
from ansible_collections.pgexclusive.backup.plugins.module_utils.backup_label import (
    LABEL_FILE, TABLESPACE_MAP, parse_backup_label, restorable_label)
from ansible_collections.pgexclusive.backup.plugins.module_utils.errors import BackupError

METHODS = ("tar", "rsync", "copy", "command")
COMPRESSIONS = ("none", "gzip", "zstd")
TAR_SUFFIX = {"none": ".tar", "gzip": ".tar.gz", "zstd": ".tar.zst"}
TAR_COMPRESS_ARG = {"none": [], "gzip": ["--gzip"], "zstd": ["--zstd"]}
DATA_SUBDIR = "data"
TABLESPACES_SUBDIR = "tablespaces"
STAGING_SUBDIR = ".staging"
RESTORABLE_LABEL_FILE = "backup_label.restorable"
# Parallel gzip: blocks of the tar stream compressed at gzip's default level, one gzip member each.
GZIP_BLOCK = 4 << 20
GZIP_LEVEL = 6

# Exit codes that mean "the live cluster changed under us", which is normal:
# GNU tar 1 = "some files differ" (changed while read), rsync 24 = "some
# files vanished before they could be transferred".
NORMAL_EXIT = {"tar": (0, 1), "rsync": (0, 24), "command": (0,), "copy": (0,)}


def is_normal_exit(tool, rc):
    """True when ``rc`` from ``tool`` means the copy is complete."""
    return rc in NORMAL_EXIT[tool]


def tar_name(name, compression):
    """'base' + compression -> 'base.tar.gz' etc."""
    if compression not in COMPRESSIONS:
        raise BackupError("Unknown compression %r." % compression, "Use one of %s." % ", ".join(COMPRESSIONS))
    return name + TAR_SUFFIX[compression]


def tar_compress_args(compression, parallel=1):
    """tar's compression options; zstd gets ``parallel`` threads (the Copier gzips with gzip_parallel)."""
    if compression == "zstd" and parallel > 1:
        return ["--use-compress-program=zstd -T%d" % parallel]
    return TAR_COMPRESS_ARG[compression]


def tar_data_command(data_directory, staging, output, compression="none", extra=(), parallel=1):
    """GNU tar of the data directory, backup_label taken from ``staging``.

    The live backup_label is excluded and the staged one added as member
    ``backup_label`` (no './' prefix, so the anchored exclusion of
    './backup_label' does not drop it again).
    """
    return (["tar", "-C", data_directory, "-cf", output] + tar_compress_args(compression, parallel)
            + tar_exclude_args(extra) + ["--anchored", "--exclude=./" + LABEL_FILE, "--no-anchored", "."]
            + ["-C", staging, LABEL_FILE])


def tar_tablespace_command(location, output, compression="none", extra=(), parallel=1):
    """GNU tar of one tablespace's directory; only the name patterns apply there."""
    args = ["--no-anchored"] + ["--exclude=%s" % p for p in ANYWHERE] + ["--exclude=%s" % p for p in extra]
    return ["tar", "-C", location, "-cf", output] + tar_compress_args(compression, parallel) + args + ["."]


def rsync_data_command(data_directory, target, extra=(), mkpath=False):
    """rsync of the data directory into ``target`` (local dir or host:path), excluding per backup_files.

    Patterns that start with '/' are anchored at the transfer root.
    backup_label is excluded: the staged one is sent afterwards. Symbolic
    links are kept as links (-a implies -l), so pg_tblspc/<oid> is not followed.
    """
    args = ["rsync", "-a", "--delete", "--delete-excluded"] + (["--mkpath"] if mkpath else [])
    args += ["--exclude=/%s/*" % name for name in EMPTY_DIRS]
    args += ["--exclude=/postmaster.pid", "--exclude=/postmaster.opts", "--exclude=/backup_label.old",
             "--exclude=/" + LABEL_FILE]
    args += ["--exclude=%s" % p for p in ANYWHERE]
    args += ["--exclude=%s" % p for p in extra]
    return args + [data_directory.rstrip("/") + "/", target.rstrip("/") + "/"]


def rsync_tablespace_command(location, target, extra=(), mkpath=False):
    args = ["rsync", "-a", "--delete"] + (["--mkpath"] if mkpath else []) + ["--exclude=%s" % p for p in ANYWHERE]
    args += ["--exclude=%s" % p for p in extra]
    return args + [location.rstrip("/") + "/", target.rstrip("/") + "/"]


def tablespaces_of(data_directory):
    """The tablespaces as [{'oid', 'path'}] read from the links in pg_tblspc/."""
    tblspc = os.path.join(data_directory, "pg_tblspc")
    found = []
    if not os.path.isdir(tblspc):
        return found
    for name in sorted(os.listdir(tblspc)):
        full = os.path.join(tblspc, name)
        if os.path.islink(full):
            target = os.readlink(full)
            if not os.path.isabs(target):
                target = os.path.normpath(os.path.join(tblspc, target))
            found.append({"oid": name, "path": target})
        elif os.path.isdir(full):
            # An in-place tablespace (allow_in_place_tablespaces) is copied with the data directory.
            continue
    return found


def check_label(text, label):
    """The live backup_label must be this run's: never copy under someone else's label."""
    fields = parse_backup_label(text)
    if fields.get("label") != label:
        raise BackupError(
            "The backup in progress is labelled %r, not this run's %r." % (fields.get("label"), label),
            "Another backup started in between; this run stops nothing and copies nothing.")
    return fields


def label_for_copy(text, fix_label):
    """The backup_label text to put in the copy."""
    return restorable_label(text) if fix_label else text


def restore_hint(fix_label):
    """What the user of the ``command`` method must do before restoring."""
    if not fix_label:
        return ("backup_label in the snapshot can be restored as it is (PostgreSQL 14 and earlier). "
                "Keep backup_label and tablespace_map in the restored data directory.")
    return ("Before restoring the snapshot, change the line 'BACKUP METHOD: pg_start_backup' in its backup_label "
            "to 'BACKUP METHOD: streamed' (or replace the file with %s from the backup directory), e.g. "
            "sed -i 's/^BACKUP METHOD: pg_start_backup$/BACKUP METHOD: streamed/' <restored>/backup_label. "
            "Without it PostgreSQL 15+ declares the copy consistent at the backup's start: a restore with "
            "recovery_target = 'immediate' fails with 'WAL ends before end of online backup' and a standby "
            "answers queries too early. Never change the live data directory's backup_label." % RESTORABLE_LABEL_FILE)


class Copier(object):
    """One copy run. ``run`` executes argv lists and returns (rc, stdout, stderr)."""

    def __init__(self, data_directory, backup_dir, label, method="tar", compression="none", exclude=(),
                 fix_label=False, command=None, rsync_target=None, run=None, parallel=1):
        if method not in METHODS:
            raise BackupError("Unknown copy method %r." % method, "Use one of %s." % ", ".join(METHODS))
        if method != "tar" and compression != "none":
            raise BackupError("Compression %r only applies to the tar method." % compression,
                              "Set compression to none, or use method tar.")
        if parallel < 1:
            raise BackupError("parallel is %d; it must be 1 or more." % parallel,
                              "Set it to the number of copy workers (1: one stream).")
        if method == "command" and not command:
            raise BackupError("The command method needs a command.", "Set exclusive_backup_command.")
        self.data_directory = data_directory.rstrip("/") or "/"
        self.backup_dir = backup_dir
        self.label = label
        self.method = method
        self.compression = compression
        self.exclude = list(exclude or ())
        self.fix_label = fix_label
        self.command = command
        self.rsync_target = rsync_target
        self.parallel = parallel
        self.run = run or run_argv
        self.warnings = []
        self.commands = []

    # -- plan ---------------------------------------------------------------

    def live_label(self):
        path = os.path.join(self.data_directory, LABEL_FILE)
        try:
            with open(path) as handle:
                return handle.read()
        except (IOError, OSError):
            raise BackupError(
                "%s has no backup_label: no exclusive backup is in progress." % self.data_directory,
                "Start the backup first (pg_start_backup); a copy without backup_label is not a backup.")

    def copy(self):
        started = time.time()
        text = self.live_label()
        fields = check_label(text, self.label)
        tablespaces = tablespaces_of(self.data_directory)
        owner = os.stat(self.data_directory)
        if not os.path.isdir(self.backup_dir):
            os.makedirs(self.backup_dir, 0o700)
        staging = os.path.join(self.backup_dir, STAGING_SUBDIR)
        if os.path.isdir(staging):
            shutil.rmtree(staging)
        os.mkdir(staging, 0o700)
        copy_text = label_for_copy(text, self.fix_label)
        staged = os.path.join(staging, LABEL_FILE)
        _write(staged, copy_text, owner)
        try:
            outputs = getattr(self, "_copy_" + self.method)(staging, tablespaces)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        result = {
            "method": self.method,
            "compression": self.compression,
            "label": self.label,
            "start_wal_file": fields.get("start_wal_file"),
            "label_fixed": self.fix_label and self.method != "command",
            "tablespaces": tablespaces,
            "outputs": outputs,
            "commands": self.commands,
            "duration": round(time.time() - started, 3),
            "warnings": self.warnings,
        }
        if self.method == "command":
            # Give the user the label their snapshot needs, next to backup.json.
            _write(os.path.join(self.backup_dir, RESTORABLE_LABEL_FILE), copy_text, None, 0o644)
            result["restore_hint"] = restore_hint(self.fix_label)
        result["bytes"] = _size_of(self.backup_dir) if self.method != "command" else None
        return result

    def _check(self, tool, argv, rc, err):
        self.commands.append({"argv": argv, "rc": rc})
        if not is_normal_exit(tool, rc):
            name = tool if tool != "command" else "the copy command"
            raise BackupError(
                "The copy failed: %s exited with %d: %s" % (name, rc, (err or "").strip()[-2000:]),
                "Fix the cause (space, permissions, the destination) and run the backup again.")
        if rc != 0:
            self.warnings.append("%s exited with %d, which is normal on a live cluster: %s"
                                 % (tool, rc, (err or "").strip().splitlines()[-1:] or ""))

    def _copy_tar(self, staging, tablespaces):
        outputs = []
        base = os.path.join(self.backup_dir, tar_name("base", self.compression))
        self._tar(lambda output, compression: tar_data_command(
            self.data_directory, staging, output, compression, self.exclude, self.parallel), base)
        outputs.append(os.path.basename(base))
        for tblspc in tablespaces:
            out = os.path.join(self.backup_dir, tar_name(tblspc["oid"], self.compression))
            self._tar(lambda output, compression, path=tblspc["path"]: tar_tablespace_command(
                path, output, compression, self.exclude, self.parallel), out)
            outputs.append(os.path.basename(out))
        return outputs

    def _tar(self, command, output):
        """One tar. gzip is done here with zlib, not by GNU gzip: zlib compresses about 1.4x faster
        (docs/benchmarks.md), and in ``parallel`` threads."""
        if self.compression == "gzip":
            argv = command("-", "none")
            rc, err = gzip_parallel(argv, output, self.parallel)
        else:
            argv = command(output, self.compression)
            rc, _out, err = self.run(argv)
        self._check("tar", argv, rc, err)

    def _targets(self):
        root = self.backup_dir
        if self.rsync_target:
            root = self.rsync_target.rstrip("/") + "/" + os.path.basename(self.backup_dir.rstrip("/"))
        return root + "/" + DATA_SUBDIR, root + "/" + TABLESPACES_SUBDIR

    def _copy_rsync(self, staging, tablespaces):
        data_target, tblspc_target = self._targets()
        if not self.rsync_target and not os.path.isdir(data_target):
            os.makedirs(data_target)
        # A remote target's <label>/ does not exist yet: --mkpath (rsync 3.2.3+) creates it.
        argv = rsync_data_command(self.data_directory, data_target, self.exclude, mkpath=bool(self.rsync_target))
        rc, _out, err = self.run(argv)
        self._check("rsync", argv, rc, err)
        argv = ["rsync", "-a", os.path.join(staging, LABEL_FILE), data_target + "/" + LABEL_FILE]
        rc, _out, err = self.run(argv)
        self._check("rsync", argv, rc, err)
        for tblspc in tablespaces:
            target = tblspc_target + "/" + tblspc["oid"]
            if not self.rsync_target and not os.path.isdir(target):
                os.makedirs(target)
            argv = rsync_tablespace_command(tblspc["path"], target, self.exclude, mkpath=bool(self.rsync_target))
            rc, _out, err = self.run(argv)
            self._check("rsync", argv, rc, err)
        if not self.rsync_target:
            _relink_tablespaces(data_target, tablespaces)
        elif tablespaces:
            self.warnings.append("The remote copy's pg_tblspc links still point at the original locations; "
                                 "tablespace_map names them; the tablespaces' contents are in %s." % tblspc_target)
        return [DATA_SUBDIR] + ([TABLESPACES_SUBDIR] if tablespaces else [])

    def _copy_copy(self, staging, tablespaces):
        data_target, tblspc_target = self._targets()
        copy_tree(self.data_directory, data_target, self.exclude, prefix="", workers=self.parallel)
        shutil.copy2(os.path.join(staging, LABEL_FILE), os.path.join(data_target, LABEL_FILE))
        _chown_like(os.path.join(data_target, LABEL_FILE), os.stat(self.data_directory))
        for tblspc in tablespaces:
            copy_tree(tblspc["path"], os.path.join(tblspc_target, tblspc["oid"]), self.exclude,
                      prefix="pg_tblspc/%s/" % tblspc["oid"], workers=self.parallel)
        _relink_tablespaces(data_target, tablespaces)
        self.commands.append({"argv": ["copy", self.data_directory, data_target], "rc": 0})
        return [DATA_SUBDIR] + ([TABLESPACES_SUBDIR] if tablespaces else [])

    def _copy_command(self, staging, tablespaces):
        env = dict(os.environ)
        env.update({
            "PGX_DATA_DIRECTORY": self.data_directory,
            "PGX_TABLESPACES": " ".join("%s=%s" % (t["oid"], t["path"]) for t in tablespaces),
            "PGX_BACKUP_DIR": self.backup_dir,
            "PGX_LABEL": self.label,
            "PGX_BACKUP_LABEL_RESTORABLE": os.path.join(self.backup_dir, RESTORABLE_LABEL_FILE),
        })
        # The copy of the restorable label must exist before the command runs, so it can ship it.
        _write(os.path.join(self.backup_dir, RESTORABLE_LABEL_FILE),
               open(os.path.join(staging, LABEL_FILE)).read(), None, 0o644)
        argv = ["/bin/sh", "-c", self.command]
        rc, out, err = self.run(argv, env=env)
        self._check("command", argv, rc, err or out)
        return []


def gzip_parallel(argv, output, workers, block=GZIP_BLOCK):
    """Run ``argv``, which writes a tar stream to stdout, and gzip that stream into ``output`` with ``workers`` threads.

    Each block becomes a gzip member of its own, as pigz does: gzip -d, tar -z
    and zlib read the members one after the other as a single stream (RFC 1952).
    zlib does not hold Python's lock while it compresses, so the threads use
    the cores. Returns tar's (exit code, stderr).
    """
    with tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=errors)
        try:
            with open(output, "wb") as out:
                in_flight = collections.deque()
                while True:
                    data = proc.stdout.read(block)
                    if not data:
                        break
                    # The next block was read while ``workers`` blocks compressed: tar never waits for zlib.
                    if len(in_flight) >= workers:
                        _write_member(in_flight.popleft(), out)
                    member = _GzipMember(data)
                    member.start()
                    in_flight.append(member)
                while in_flight:
                    _write_member(in_flight.popleft(), out)
        except (IOError, OSError) as exc:
            proc.kill()
            proc.wait()
            raise BackupError("The copy failed on %s: %s" % (output, exc),
                              "Fix the cause (space, permissions, the destination) and run the backup again.")
        rc = proc.wait()
        errors.seek(0)
        return rc, errors.read().decode("utf-8", "replace")


class _GzipMember(threading.Thread):
    def __init__(self, data):
        threading.Thread.__init__(self)
        self.data = data
        self.result = None

    def run(self):
        compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)   # 31: gzip header and trailer
        self.result = compressor.compress(self.data) + compressor.flush()
        self.data = None


def _write_member(member, out):
    member.join()
    if member.result is None:
        raise OSError("compressing a block failed (see the module's stderr)")
    out.write(member.result)


def run_argv(argv, env=None):
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    out, err = proc.communicate()
    return proc.returncode, out.decode("utf-8", "replace"), err.decode("utf-8", "replace")


def copy_tree(source, target, extra=(), prefix="", workers=1):
    """Copy ``source`` to ``target`` leaving out what backup_files excludes.

    Files that vanish while the tree is walked are skipped: normal on a live
    cluster (WAL replay recreates them). Symbolic links are copied as links.
    ``prefix`` makes the relative paths those of the data directory, so the
    exclusion list applies the same way inside tablespaces. With ``workers``
    > 1 the files are shared out by size among that many threads: the kernel
    copies (sendfile) without holding Python's lock, so one stream's waits on
    the disk overlap with another's.
    """
    jobs = []
    for root, dirs, files in os.walk(source):
        rel_root = os.path.relpath(root, source)
        rel_root = "" if rel_root == "." else rel_root.replace(os.sep, "/") + "/"
        dest_root = os.path.join(target, rel_root)
        if not os.path.isdir(dest_root):
            os.makedirs(dest_root)
        try:
            _copy_meta(root, dest_root)
        except OSError:
            pass
        kept = []
        for name in dirs:
            rel = prefix + rel_root + name
            full = os.path.join(root, name)
            if is_excluded(rel, extra):
                continue
            if os.path.islink(full):
                files.append(name)   # copied as a link below, never followed
                continue
            kept.append(name)
        dirs[:] = kept
        for name in files:
            rel = prefix + rel_root + name
            if rel == LABEL_FILE or is_excluded(rel, extra):
                # The live backup_label is replaced by the staged one (Copier._copy_copy).
                continue
            src = os.path.join(root, name)
            try:
                st = os.lstat(src)
            except (IOError, OSError) as exc:
                _skip_vanished(src, exc)
                continue
            if stat.S_ISLNK(st.st_mode):
                dst = os.path.join(dest_root, name)
                if os.path.lexists(dst):
                    os.unlink(dst)
                os.symlink(os.readlink(src), dst)
                _chown_like(dst, st)
                continue
            jobs.append((st.st_size, src, os.path.join(dest_root, name), st))
    if workers <= 1 or len(jobs) < 2:
        return _copy_files(jobs)
    return _copy_in_parallel(balanced(jobs, workers))


def balanced(jobs, workers):
    """Share (size, ...) jobs out among ``workers`` lists of nearly equal total size (largest first)."""
    bins = [[0, []] for _worker in range(workers)]
    for job in sorted(jobs, key=lambda j: j[0], reverse=True):
        lightest = min(bins, key=lambda b: b[0])
        lightest[0] += job[0]
        lightest[1].append(job)
    return [jobs_of_bin for _total, jobs_of_bin in bins if jobs_of_bin]


def _copy_in_parallel(shares):
    counts, errors = [], []

    def work(share):
        try:
            counts.append(_copy_files(share))
        except BackupError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(share,)) for share in shares]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return sum(counts)


def _copy_files(jobs):
    count = 0
    for _size, src, dst, st in jobs:
        try:
            shutil.copyfile(src, dst)
            _copy_meta(src, dst, st)
            count += 1
        except (IOError, OSError) as exc:
            _skip_vanished(src, exc)
    return count


def _skip_vanished(src, exc):
    """A file that vanished while copying is normal on a live cluster; anything else fails the copy."""
    if getattr(exc, "errno", None) != 2:   # ENOENT
        raise BackupError("The copy failed on %s: %s" % (src, exc),
                          "Fix the cause (space, permissions, the destination) and run the backup again.")


def _copy_meta(src, dst, st=None):
    st = st or os.stat(src)
    os.chmod(dst, stat.S_IMODE(st.st_mode))
    os.utime(dst, (st.st_atime, st.st_mtime))
    _chown_like(dst, st)


def _chown_like(path, st):
    if hasattr(os, "lchown") and os.geteuid() == 0:
        os.lchown(path, st.st_uid, st.st_gid)


def _relink_tablespaces(data_target, tablespaces):
    """pg_tblspc/<oid> in the copy: still a link, now to the copy's own tablespace directory.

    The backup stays self-contained and pg_verifybackup follows the link into
    the copy, not into the live tablespace. tablespace_map keeps the original
    locations: recovery recreates the links from it.
    """
    for tblspc in tablespaces:
        link = os.path.join(data_target, "pg_tblspc", tblspc["oid"])
        st = os.lstat(link) if os.path.lexists(link) else None
        if os.path.lexists(link):
            os.unlink(link)
        os.symlink(os.path.join("..", "..", TABLESPACES_SUBDIR, tblspc["oid"]), link)
        if st is not None:
            _chown_like(link, st)


def _write(path, text, owner_stat, mode=0o600):
    with open(path, "w") as handle:
        handle.write(text)
    os.chmod(path, mode)
    if owner_stat is not None:
        _chown_like(path, owner_stat)


def _size_of(path):
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


__all__ = ["Copier", "copy_tree", "balanced", "tar_compress_args", "gzip_parallel", "tar_data_command", "rsync_data_command", "is_normal_exit", "tar_name",
           "restore_hint", "label_for_copy", "check_label", "tablespaces_of", "TABLESPACE_MAP"]
