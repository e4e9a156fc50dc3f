# -*- coding: utf-8 -*-
# Copyright: pgexclusive.backup maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""The copy methods, one class each: tar, rsync, copy and the user's command.

Each gets the run through a CopyContext and the staging area, which holds the
backup_label and the empty directories the copy gets in place of the live
ones; ``run`` copies and returns the names of what it wrote (the layout is
backup_layout's).
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import os
import shlex
import shutil

from ansible_collections.pgexclusive.backup.plugins.module_utils.backup_files import (
    EMPTY_DIRS, STAGED_FILES, rsync_exclude_args, tar_exclude_args)
from ansible_collections.pgexclusive.backup.plugins.module_utils.backup_layout import (
    DATA_SUBDIR, RESTORABLE_LABEL_FILE, TABLESPACES_SUBDIR, TAR_COMPRESS_ARG, tar_name, zstd_program)
from ansible_collections.pgexclusive.backup.plugins.module_utils.copy.io import (
    FAILED_HINT, chown_like, copy_tree, gzip_parallel)
from ansible_collections.pgexclusive.backup.plugins.module_utils.errors import BackupError
from ansible_collections.pgexclusive.backup.plugins.module_utils.repository import (
    REMOTE_HINT, rsync_shell_args, stream_to_repository)

# Exit codes that mean "the live cluster changed under us", which is normal:
# GNU tar 1 = "some files differ" (changed while read), rsync 24 = "some
# files vanished before they could be transferred".
NORMAL_EXIT = {"tar": (0, 1), "rsync": (0, 24), "command": (0,), "copy": (0,)}


def is_normal_exit(tool, rc):
    """True when ``rc`` from ``tool`` means the copy is complete."""
    return rc in NORMAL_EXIT[tool]


def tar_compress_args(compression, parallel=1):
    """tar's compression options; zstd gets ``parallel`` threads (TarMethod gzips with gzip_parallel)."""
    if compression == "zstd":
        return [zstd_program(parallel)]
    return TAR_COMPRESS_ARG[compression]


def tar_data_command(data_directory, staging, output, compression="none", extra=(), parallel=1):
    """GNU tar of the data directory, backup_label and the EMPTY_DIRS taken from ``staging``.

    The live backup_label and EMPTY_DIRS are excluded and the staged ones
    added as members without the './' prefix, so the anchored exclusions
    ('./backup_label', './pg_wal') do not drop them again: the archive holds
    pg_wal/ as a directory even when the live pg_wal is a symbolic link.
    """
    return (["tar", "-C", data_directory, "-cf", output] + tar_compress_args(compression, parallel)
            + tar_exclude_args(extra, staged=True) + ["."]
            + ["-C", staging] + list(STAGED_FILES + EMPTY_DIRS))


def tar_tablespace_command(location, output, compression="none", extra=(), parallel=1):
    """GNU tar of one tablespace's directory; only the name patterns apply there."""
    return (["tar", "-C", location, "-cf", output] + tar_compress_args(compression, parallel)
            + tar_exclude_args(extra, top=False) + ["."])


def rsync_data_command(data_directory, target, extra=(), mkpath=False, rsh=None):
    """rsync of the data directory into ``target`` (local dir or host:path), excluding per backup_files.

    backup_label and the EMPTY_DIRS are excluded (and deleted from an earlier
    copy in ``target``): rsync_staged_command sends the staged ones
    afterwards. Symbolic links are kept as links (-a implies -l), so
    pg_tblspc/<oid> is not followed.
    """
    args = ["rsync", "-a", "--delete", "--delete-excluded"] + (["--mkpath"] if mkpath else []) + rsync_shell_args(rsh)
    args += rsync_exclude_args(extra, staged=True)
    return args + [data_directory.rstrip("/") + "/", target.rstrip("/") + "/"]


def rsync_staged_command(staging, target, rsh=None):
    """rsync of the staged backup_label and empty directories into the copy ``target``.

    Named one by one, not as staging/, so that the copy's own top directory
    keeps the data directory's owner and mode.
    """
    return (["rsync", "-a"] + rsync_shell_args(rsh) + [os.path.join(staging, name) for name in STAGED_FILES + EMPTY_DIRS]
            + [target.rstrip("/") + "/"])


def rsync_tablespace_command(location, target, extra=(), mkpath=False, rsh=None):
    args = (["rsync", "-a", "--delete"] + (["--mkpath"] if mkpath else []) + rsync_shell_args(rsh)
            + rsync_exclude_args(extra, top=False))
    return args + [location.rstrip("/") + "/", target.rstrip("/") + "/"]


class CopyContext(object):
    """The run as the copy methods see it, and what they report back: the commands run and the warnings.

    ``remote`` is the Repository on another host, None for a copy on the
    database host; ``repository`` is the option as given, which may also be
    a local directory for rsync. ``run(argv, env=None, pass_fds=())`` executes
    an argv list and returns (rc, stdout, stderr). ``cancel`` is the Copier's: set, the copy stops between files.
    """

    def __init__(self, data_directory, backup_dir, label, compression, exclude, command, repository, remote,
                 parallel, run, cancel):
        self.data_directory = data_directory
        self.backup_dir = backup_dir
        self.label = label
        self.compression = compression
        self.exclude = exclude
        self.command = command
        self.repository = repository
        self.remote = remote
        self.parallel = parallel
        self.run = run
        self.cancel = cancel
        self.warnings = []
        self.commands = []

    def remote_dir(self):
        return self.remote.backup_path(self.backup_dir)

    def check(self, tool, argv, rc, err):
        """Record ``argv``'s exit code; raise unless ``tool`` exited normally, warn when normal meant 'changed'."""
        self.commands.append({"argv": argv, "rc": rc})
        if not is_normal_exit(tool, rc):
            if self.remote and tool == "rsync":
                # ssh's own words name only the host: the message names the repository's directory.
                raise BackupError("The copy to %s failed: rsync exited with %d: %s" % (
                    self.remote.location(self.remote_dir()), rc, (err or "").strip()[-2000:]), REMOTE_HINT)
            name = tool if tool != "command" else "the copy command"
            raise BackupError(
                "The copy failed: %s exited with %d: %s" % (name, rc, (err or "").strip()[-2000:]), FAILED_HINT)
        if rc != 0:
            self.warnings.append("%s exited with %d, which is normal on a live cluster: %s"
                                 % (tool, rc, (err or "").strip().splitlines()[-1:] or ""))


class Sources(object):
    """What the copy reads, each root opened and checked once (copy.open_sources): ``data``, the data
    directory's SourceRoot, and ``tablespaces``, a list of (tablespace, SourceRoot). The methods read
    only through these: the tree copy from ``fd``, a tool from ``source`` with ``fd`` passed to it."""

    def __init__(self, data):
        self.data = data
        self.tablespaces = []

    def records(self):
        return [record for record, _root in self.tablespaces]

    def close(self):
        for _record, root in self.tablespaces:
            root.close()
        self.data.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class CopyMethod(object):
    """One way to copy. ``run(staging, sources)`` copies the Sources and returns the outputs' names; ``size()``
    is the copy's bytes, None where they are not on the database host to measure."""

    name = None

    def __init__(self, context):
        self.context = context

    def run(self, staging, sources):
        raise NotImplementedError

    def size(self):
        return _size_of(self.context.backup_dir)

    def output_bytes(self):
        """Each output file's bytes by name, for a restore to check them by; None where the outputs are directories."""
        return None

    def targets(self):
        """Where data/ and tablespaces/ go: the repository (remote or a local directory), or backup_dir."""
        ctx = self.context
        if ctx.remote:
            root = ctx.remote.rsync_target(ctx.remote_dir())
        elif ctx.repository:
            root = ctx.repository.rstrip("/") + "/" + os.path.basename(ctx.backup_dir.rstrip("/"))
        else:
            root = ctx.backup_dir
        return root + "/" + DATA_SUBDIR, root + "/" + TABLESPACES_SUBDIR


class TarMethod(CopyMethod):
    name = "tar"

    def __init__(self, context):
        CopyMethod.__init__(self, context)
        # Bytes of the tar streams sent to a repository.
        self.streamed = 0
        self.sizes = {}

    def run(self, staging, sources):
        ctx = self.context
        outputs = []
        where = ctx.remote_dir() if ctx.remote else ctx.backup_dir
        base = os.path.join(where, tar_name("base", ctx.compression))
        self._tar(lambda output, compression: tar_data_command(
            sources.data.source, staging, output, compression, ctx.exclude, ctx.parallel), base, sources.data)
        outputs.append(os.path.basename(base))
        for tblspc, root in sources.tablespaces:
            out = os.path.join(where, tar_name(str(tblspc["oid"]), ctx.compression))
            self._tar(lambda output, compression, root=root: tar_tablespace_command(
                root.source, output, compression, ctx.exclude, ctx.parallel), out, root)
            outputs.append(os.path.basename(out))
        return outputs

    def size(self):
        return self.streamed if self.context.remote else CopyMethod.size(self)

    def output_bytes(self):
        return dict(self.sizes)

    def _tar(self, command, output, root):
        """One tar of the SourceRoot ``root``. gzip is done here with zlib, not by GNU gzip: zlib compresses
        about 1.4x faster (docs/benchmarks.md), and in ``parallel`` threads."""
        ctx = self.context
        if ctx.remote:
            return self._tar_to_repository(command, output, root)
        if ctx.compression == "gzip":
            argv = command("-", "none")
            rc, err = gzip_parallel(argv, output, ctx.parallel, pass_fds=(root.fd,))
        else:
            argv = command(output, ctx.compression)
            rc, _out, err = ctx.run(argv, pass_fds=(root.fd,))
        ctx.check("tar", argv, rc, err)
        self.sizes[os.path.basename(output)] = os.path.getsize(output)

    def _tar_to_repository(self, command, output, root):
        """One tar streamed into ``output`` on the repository host: tar | (gzip here) | ssh 'cat > output'.

        The stream passes through this process, which counts it and, for
        gzip, compresses it in ``parallel`` threads as for a local file.
        """
        ctx = self.context
        gzip = ctx.compression == "gzip"
        argv = command("-", "none" if gzip else ctx.compression)
        rc, err, size, ssh_argv = stream_to_repository(
            ctx.remote, "umask 077 && cat > %s" % shlex.quote(output), argv, ctx.remote.location(output),
            ctx.parallel if gzip else 0, pass_fds=(root.fd,))
        ctx.commands.append({"argv": ssh_argv, "rc": 0})
        ctx.check("tar", argv, rc, err)
        self.streamed += size
        self.sizes[os.path.basename(output)] = size


class RsyncMethod(CopyMethod):
    name = "rsync"

    def run(self, staging, sources):
        ctx = self.context
        data_target, tblspc_target = self.targets()
        local = not ctx.repository
        rsh = ctx.remote.ssh_argv() if ctx.remote else None
        if local and not os.path.isdir(data_target):
            os.makedirs(data_target)
        # A target's <label>/ (or, remote, tablespaces/) does not exist yet: --mkpath (rsync 3.2.3+) creates it.
        argv = rsync_data_command(sources.data.source, data_target, ctx.exclude, mkpath=not local, rsh=rsh)
        rc, _out, err = ctx.run(argv, pass_fds=(sources.data.fd,))
        ctx.check("rsync", argv, rc, err)
        argv = rsync_staged_command(staging, data_target, rsh=rsh)
        rc, _out, err = ctx.run(argv)
        ctx.check("rsync", argv, rc, err)
        for tblspc, root in sources.tablespaces:
            target = "%s/%s" % (tblspc_target, tblspc["oid"])
            if local and not os.path.isdir(target):
                os.makedirs(target)
            argv = rsync_tablespace_command(root.source, target, ctx.exclude, mkpath=not local, rsh=rsh)
            rc, _out, err = ctx.run(argv, pass_fds=(root.fd,))
            ctx.check("rsync", argv, rc, err)
        if local:
            relink_tablespaces(os.path.join(data_target, "pg_tblspc"), sources.records())
        elif sources.tablespaces:
            # The links are made here, then sent over the live ones rsync copied: the repository host
            # may run nothing but sshd, rsync and tar.
            links = os.path.join(staging, "pg_tblspc")
            os.mkdir(links, 0o700)
            relink_tablespaces(links, sources.records(), owner=sources.data.stat)
            argv = (["rsync", "-a"] + rsync_shell_args(rsh) + sorted(os.path.join(links, name) for name in
                                                                     os.listdir(links))
                    + [data_target.rstrip("/") + "/pg_tblspc/"])
            rc, _out, err = ctx.run(argv)
            ctx.check("rsync", argv, rc, err)
        return [DATA_SUBDIR] + ([TABLESPACES_SUBDIR] if sources.tablespaces else [])

    def size(self):
        # Files on another host: not measured here.
        return None if self.context.remote else CopyMethod.size(self)


class FileCopyMethod(CopyMethod):
    """The ``copy`` method: copy_tree in this process, no external tool."""

    name = "copy"

    def run(self, staging, sources):
        ctx = self.context
        tablespaces = sources.records()
        data_target, tblspc_target = self.targets()
        targets = [data_target] + [os.path.join(tblspc_target, str(t["oid"])) for t in tablespaces]
        present = [path for path in targets if os.path.lexists(path)]
        if present:
            raise BackupError("%s already exist: the copy method writes new directories only." % ", ".join(present),
                              "Remove them, or copy into a new backup directory (the role makes one per label).")
        owner = sources.data.stat
        copy_tree(sources.data, data_target, ctx.exclude, prefix="", workers=ctx.parallel, cancel=ctx.cancel)
        make_empty_dirs(data_target, owner)
        for name in STAGED_FILES:
            shutil.copy2(os.path.join(staging, name), os.path.join(data_target, name))
            chown_like(os.path.join(data_target, name), owner)
        for tblspc, root in sources.tablespaces:
            copy_tree(root, os.path.join(tblspc_target, str(tblspc["oid"])), ctx.exclude,
                      prefix="pg_tblspc/%s/" % tblspc["oid"], workers=ctx.parallel, cancel=ctx.cancel)
        relink_tablespaces(os.path.join(data_target, "pg_tblspc"), tablespaces)
        ctx.commands.append({"argv": ["copy", ctx.data_directory, data_target], "rc": 0})
        return [DATA_SUBDIR] + ([TABLESPACES_SUBDIR] if tablespaces else [])


class CommandMethod(CopyMethod):
    """The user's command (a snapshot, usually), told what to copy in PGX_* variables."""

    name = "command"

    def run(self, staging, sources):
        ctx = self.context
        env = dict(os.environ)
        env.update({
            "PGX_DATA_DIRECTORY": ctx.data_directory,
            "PGX_TABLESPACES": " ".join("%s=%s" % (t["oid"], t["location"]) for t in sources.records()),
            "PGX_BACKUP_DIR": ctx.backup_dir,
            "PGX_LABEL": ctx.label,
            "PGX_BACKUP_LABEL_RESTORABLE": os.path.join(ctx.backup_dir, RESTORABLE_LABEL_FILE),
        })
        argv = ["/bin/sh", "-c", ctx.command]
        rc, out, err = ctx.run(argv, env=env)
        ctx.check("command", argv, rc, err or out)
        return []

    def size(self):
        # A snapshot elsewhere: not measured here.
        return None


# In the order the module documents them.
METHOD_CLASSES = (TarMethod, RsyncMethod, FileCopyMethod, CommandMethod)


def make_empty_dirs(parent, owner):
    """Real, empty directories for the EMPTY_DIRS in ``parent``, mode 0700.

    Owned like the data directory: by the server's OS user, who owns the live
    ones (or the directories their links lead to).
    """
    for name in EMPTY_DIRS:
        path = os.path.join(parent, name)
        os.mkdir(path, 0o700)
        # mkdir's mode went through the umask.
        os.chmod(path, 0o700)
        chown_like(path, owner)


def relink_tablespaces(links_dir, tablespaces, owner=None):
    """pg_tblspc/<oid> in the copy: still a link, now to the copy's own tablespace directory.

    The backup stays self-contained and pg_verifybackup follows the link into
    the copy, not into the live tablespace. tablespace_map keeps the original
    locations: recovery recreates the links from it. The links are made in
    ``links_dir`` (the copy's pg_tblspc, or one sent over it), owned as the
    link they replace or as ``owner``.
    """
    for tblspc in tablespaces:
        link = os.path.join(links_dir, str(tblspc["oid"]))
        st = os.lstat(link) if os.path.lexists(link) else owner
        if os.path.lexists(link):
            os.unlink(link)
        os.symlink(os.path.join("..", "..", TABLESPACES_SUBDIR, str(tblspc["oid"])), link)
        if st is not None:
            chown_like(link, st)


def _size_of(path):
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total
