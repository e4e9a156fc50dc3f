# -*- coding: utf-8 -*-
# Copyright: pgexclusive.backup maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""A restore into a Debian cluster (postgresql-common): ``debian_cluster: <major>/<name>``.

A cluster made by ``pg_createcluster`` keeps its configuration in
/etc/postgresql/<major>/<name>/ and is run by ``pg_ctlcluster``, which reads
it from there. Restored into such a cluster, a backup keeps that cluster's
own configuration (its port, socket, pg_hba.conf, conf.d): the restore lays
the copy out in the cluster's data_directory, adds only the recovery settings
(postgresql.auto.conf of the restored data directory), starts the cluster
with ``pg_ctlcluster`` and waits until the recovery target is reached, as for
any restore.

The cluster is named, never guessed: a plain restore whose target is the
data directory of a Debian cluster is refused, since pg_ctlcluster would
later start it with the configuration in /etc rather than the one the
restore wrote.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import os
import re
import subprocess

from ansible_collections.pgexclusive.backup.plugins.module_utils.config_files import parse, read_conf
from ansible_collections.pgexclusive.backup.plugins.module_utils.errors import BackupError

ETC = "/etc/postgresql"
VAR_LIB = "/var/lib/postgresql"
CLUSTER_NAME = re.compile(r"^(\d+(?:\.\d+)?)/([A-Za-z0-9_.][A-Za-z0-9_.-]*)$")


def split_name(name):
    """'15/restored' -> ('15', 'restored'); refuses anything else (a path, '..')."""
    found = CLUSTER_NAME.match(name or "")
    if not found or found.group(2) in (".", ".."):
        raise BackupError("debian_cluster %r is not <major>/<name>." % name,
                          "Name the cluster as pg_lsclusters lists it, e.g. 15/restored.")
    return found.group(1), found.group(2)


def data_directory_in(conf_text, version, name):
    """The data_directory a cluster's postgresql.conf sets (the last one), else Debian's default."""
    values = [value for _index, key, value in parse(conf_text or "") if key == "data_directory"]
    return os.path.normpath(values[-1]) if values else os.path.join(VAR_LIB, version, name)


def major_of(version_text):
    """'15.20' or '15' -> 15; None when unknown."""
    found = re.match(r"(\d+)", str(version_text or ""))
    return int(found.group(1)) if found else None


class DebianCluster(object):
    """The cluster ``version``/``name`` of postgresql-common, as its /etc directory describes it."""

    def __init__(self, version, name, etc=ETC):
        self.version, self.name = version, name
        self.conf_dir = os.path.join(etc, version, name)
        conf = read_conf(os.path.join(self.conf_dir, "postgresql.conf"))
        if conf is None:
            raise BackupError("There is no Debian cluster %s/%s (%s/postgresql.conf is missing)." % (
                version, name, self.conf_dir),
                "Create it first with pg_createcluster %s %s (pg_lsclusters lists the clusters), or restore into "
                "a plain directory without debian_cluster." % (version, name))
        self.data_directory = data_directory_in(conf, version, name)
        self.bindir = "/usr/lib/postgresql/%s/bin" % version
        link = os.path.join(self.conf_dir, "log")
        self.log_file = (os.path.realpath(link) if os.path.islink(link)
                         else "/var/log/postgresql/postgresql-%s-%s.log" % (version, name))
        self._log_offset = None

    @property
    def label(self):
        return "%s/%s" % (self.version, self.name)

    def check_major(self, record):
        """A cluster of another major than the backup's cannot run it."""
        backup_major = major_of((record or {}).get("server_version"))
        if backup_major is not None and backup_major != major_of(self.version):
            raise BackupError("The Debian cluster %s is PostgreSQL %s, and the backup is of PostgreSQL %s." % (
                self.label, self.version, backup_major),
                "Restore into a cluster of the backup's major (pg_createcluster %s <name>)." % backup_major)

    def start(self, log):
        """pg_ctlcluster <major> <name> start (through systemd where it runs); (rc, output).

        The server logs into the cluster's own log file; what it writes from
        now on is copied into ``log``, the restore's log (copy_log).
        """
        try:
            self._log_offset = os.path.getsize(self.log_file)
        except OSError:
            self._log_offset = 0
        proc = subprocess.Popen(["pg_ctlcluster", self.version, self.name, "start"],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        out, _err = proc.communicate()
        self.copy_log(log)
        return proc.returncode, out.decode("utf-8", "replace")

    def copy_log(self, log):
        """Append what the cluster's log gained since the start (or the last copy) to ``log``."""
        if self._log_offset is None:
            return
        try:
            with open(self.log_file, "rb") as source:
                source.seek(self._log_offset)
                gained = source.read()
        except (IOError, OSError):
            return
        if gained:
            with open(log, "ab") as out:
                out.write(gained)
            self._log_offset += len(gained)


def clusters_with_data_directory(path, etc=ETC):
    """The Debian clusters ('<major>/<name>') whose data_directory is ``path``."""
    found = []
    if not os.path.isdir(etc):
        return found
    for version in sorted(os.listdir(etc)):
        top = os.path.join(etc, version)
        for name in sorted(os.listdir(top)) if os.path.isdir(top) else []:
            conf = read_conf(os.path.join(top, name, "postgresql.conf"))
            if conf is not None and data_directory_in(conf, version, name) == os.path.normpath(path):
                found.append("%s/%s" % (version, name))
    return found


def cluster_for(params):
    """The Debian cluster a restore goes into (debian_cluster), or None for a plain directory.

    Sets data_directory (and bindir, when not given) from the cluster. A plain
    restore into a Debian cluster's data directory is refused.
    """
    name = params.get("debian_cluster")
    if not name:
        data = params.get("data_directory")
        owners = clusters_with_data_directory(os.path.normpath(data)) if data else []
        if owners:
            raise BackupError(
                "The target data directory %s is the Debian cluster %s's: pg_ctlcluster runs it with the "
                "configuration in %s/%s, not the one a plain restore writes." % (data, owners[0], ETC, owners[0]),
                "Restore into the cluster with debian_cluster: %s (the role: restore_debian_cluster), or into "
                "another directory." % owners[0])
        return None
    cluster = DebianCluster(*split_name(name))
    given = params.get("data_directory")
    if given and os.path.normpath(given) != cluster.data_directory:
        raise BackupError("data_directory %s is not the data directory of the Debian cluster %s (%s)." % (
            given, cluster.label, cluster.data_directory),
            "Leave data_directory out with debian_cluster: the cluster's own is restored.")
    params["data_directory"] = cluster.data_directory
    if not params.get("bindir"):
        params["bindir"] = cluster.bindir
    return cluster
