# -*- coding: utf-8 -*-
# Copyright: pgexclusive.backup maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""restore phase 5, configure: the laid-out copy is made to recover, and given to its owner.

backup_label is kept, and on 15+ its method pg_start_backup is made streamed
(see needs_label_fix); recovery.signal; the recovery settings of restore/recovery_target.py
appended to postgresql.auto.conf, archiving off. With ``minimal_config`` (the
drill) the copy's own configuration is set aside and the server reads only
what is written here; with ``confine_to`` no link of the copy may lead out.

Into a plain directory, the restored server gets a configuration derived from
the backed-up one (config_files.py): postgresql.conf whole, from the copy's
own or from the backup's config/ when the source kept it outside its data
directory (Debian's /etc/postgresql/<major>/<cluster>/), every include
inlined, and nothing naming the source cluster (data_directory, hba_file,
ident_file, external_pid_file, cluster_name, archiving); its pg_hba.conf and
pg_ident.conf in the restored data directory. Into a Debian cluster
(restore/debian.py) the cluster's own configuration in /etc stays as it is:
only the recovery settings are added, in the restored postgresql.auto.conf.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import os

from ansible_collections.pgexclusive.backup.plugins.module_utils.backup_label import (
    LABEL_FILE, parse_backup_label, restorable_label)
from ansible_collections.pgexclusive.backup.plugins.module_utils.config_files import BackedUpConfig, derive_config
from ansible_collections.pgexclusive.backup.plugins.module_utils.errors import BackupError
from ansible_collections.pgexclusive.backup.plugins.module_utils.restore.tools import read_text
from ansible_collections.pgexclusive.backup.plugins.module_utils.restore.layout import chown_tree, links_out_of, write_new
from ansible_collections.pgexclusive.backup.plugins.module_utils.restore.recovery_target import (
    recovery_settings, restore_command_for, settings_block)

CONF = "postgresql.conf"
AUTO_CONF = "postgresql.auto.conf"
# With minimal_config, the copy's own configuration files are moved here, out of the server's reach, for a
# person to read.
LIVE_CONFIG_SUBDIR = "live-config"
MINIMAL_CONFIG_TITLE = "pgexclusive.backup restore: the whole configuration of a throwaway server"
SETTINGS_TITLE = "pgexclusive.backup restore: recovery settings (remove once the restore is done)"


def needs_label_fix(label_text, major):
    """15+ recovery waits for the end-of-backup record only when the label says 'streamed'; with
    'pg_start_backup' it would call the copy consistent at the backup's start."""
    return major >= 15 and "BACKUP METHOD: pg_start_backup" in label_text


def conf_value(value):
    if isinstance(value, bool):
        return "'on'" if value else "'off'"
    return "'" + str(value).replace("'", "''") + "'"


def copy_major(data):
    text = read_text(os.path.join(data, "PG_VERSION")) or ""
    try:
        return int(text.strip().split(".")[0])
    except ValueError:
        raise BackupError("The restored copy has no readable PG_VERSION.",
                          "The backup is damaged: keep it aside and restore another one.")


def replace_config(data, config_dir, settings):
    """The whole configuration of a throwaway server: nothing of the copy's own applies.

    The copy's postgresql.conf and postgresql.auto.conf may include files, name
    a data_directory or an external_pid_file, preload libraries this host
    cannot load, archive or clean up the archive, and ask for more memory than
    a second server gets: they move to ``config_dir``/live-config (a link
    moves as a link, what it names is neither read nor changed).
    postgresql.conf is written whole from ``settings`` (name, quoted value)
    plus hba_file and ident_file in ``config_dir``, which admit local
    connections only: the caller's socket directory must be private, as its
    server's port is (no TCP listener). postgresql.auto.conf is left empty.

    Returns (the files written in ``config_dir``, the settings written).
    """
    aside = os.path.join(config_dir, LIVE_CONFIG_SUBDIR)
    if not os.path.isdir(aside):
        os.makedirs(aside, 0o700)
    for name in (CONF, AUTO_CONF):
        if os.path.lexists(os.path.join(data, name)):
            os.rename(os.path.join(data, name), os.path.join(aside, name))
    hba = os.path.join(config_dir, "pg_hba.conf")
    ident = os.path.join(config_dir, "pg_ident.conf")
    write_new(hba, "local all all trust\n")
    write_new(ident, "")
    settings = list(settings) + [("hba_file", conf_value(hba)), ("ident_file", conf_value(ident))]
    write_new(os.path.join(data, CONF), settings_block(settings, MINIMAL_CONFIG_TITLE))
    write_new(os.path.join(data, AUTO_CONF), "")
    return [hba, ident], settings


def derived_config(backed_up, replaced):
    """(file name in the restored data directory, text) of its configuration, and the notes of the derivation;
    the settings named in ``replaced`` are the restore's own (postgresql.auto.conf)."""
    config_file = backed_up.setting("config_file", CONF)
    text = backed_up.read(config_file)
    if text is None:
        raise BackupError(
            "The backup holds no postgresql.conf: its server read %s, which is neither in the data directory nor in "
            "the backup's config/." % config_file,
            "Restore into a Debian cluster made with pg_createcluster (debian_cluster), which has a configuration of "
            "its own, or take a new backup with this version: it copies the configuration from outside the data "
            "directory.")
    conf, notes = derive_config(text, config_file, backed_up.read, backed_up.list_conf, replaced)
    files = [(CONF, conf)]
    for setting, name in (("hba_file", "pg_hba.conf"), ("ident_file", "pg_ident.conf")):
        path = backed_up.setting(setting, name)
        found = backed_up.read(path)
        if found is None:
            raise BackupError("The backup holds no copy of %s %s, which its server read." % (setting, path),
                              "Restore into a Debian cluster (debian_cluster), or take a new backup with this version.")
        files.append((name, found))
    return files, notes


def write_derived_config(data, backed_up, replaced):
    """The derived configuration into ``data``; returns the notes of what was left out."""
    files, notes = derived_config(backed_up, replaced)
    for name, text in files:
        path = os.path.join(data, name)
        if os.path.lexists(path):
            os.unlink(path)
        write_new(path, text)
    return notes


def sanitize_auto_conf(data, old_data):
    """The copy's postgresql.auto.conf (ALTER SYSTEM's) without what names the source cluster or archives."""
    auto = os.path.join(data, AUTO_CONF)
    text = BackedUpConfig.read_restored(data, AUTO_CONF)
    if text is None:
        if not os.path.lexists(auto):
            return []
        # A link or a special file from an untrusted backup: what it names is neither read nor written.
        os.unlink(auto)
        return ["%s: not a regular file in the backup, left out" % os.path.join(old_data, AUTO_CONF)]
    sanitized, notes = derive_config(text, os.path.join(old_data, AUTO_CONF), lambda path: None, lambda path: [])
    os.unlink(auto)
    write_new(auto, sanitized)
    return notes


def restore_settings(p):
    """(restore_command, the settings the restore appends: recovery, archiving off, and ``settings``)."""
    command = p.get("restore_command") or restore_command_for(p.get("wal_archive_dir"))
    return command, recovery_settings(p, command) + [
        (k, conf_value(v)) for k, v in sorted((p.get("settings") or {}).items())]


def make_it_recover(p, data, result):
    """backup_label, recovery.signal and the recovery settings; returns the configuration files written
    outside ``data`` (minimal_config), for the server's owner to read."""
    label_file = os.path.join(data, LABEL_FILE)
    label = read_text(label_file)
    if label is None:
        raise BackupError("The restored copy has no backup_label: it is not an exclusive backup of this "
                          "collection, and recovery would not know where to start.",
                          "Restore a backup this collection took; never remove backup_label from a copy.")
    fixed = needs_label_fix(label, copy_major(data))
    if fixed:
        os.unlink(label_file)
        write_new(label_file, restorable_label(label))
    result["label_fixed"] = fixed
    result["backup_label"] = parse_backup_label(label)
    for name in ("postmaster.pid", "postmaster.opts", "standby.signal"):
        if os.path.lexists(os.path.join(data, name)):
            os.unlink(os.path.join(data, name))
    if not os.path.lexists(os.path.join(data, "recovery.signal")):
        write_new(os.path.join(data, "recovery.signal"), "")
    command, settings = restore_settings(p)
    written = []
    if p.get("minimal_config"):
        written, settings = replace_config(data, p["minimal_config"], settings)
    else:
        auto = os.path.join(data, AUTO_CONF)
        text = read_text(auto) or ""
        if os.path.lexists(auto):
            os.unlink(auto)
        write_new(auto, text + ("" if not text or text.endswith("\n") else "\n")
                  + settings_block(settings, SETTINGS_TITLE))
    result["restore_command"] = command
    result["settings"] = dict(settings)
    return written


def confine(data, tblspcs, inside):
    """Refuse a copy with a link leading out of ``inside``: a server started on it could write there."""
    outside = links_out_of(data, inside) + [
        found for path in sorted(tblspcs.values()) for found in links_out_of(path, inside)]
    if outside:
        raise BackupError(
            "The copy links out of its scratch directory (%s), and a server started on it could write there."
            % ", ".join(outside),
            "What such a link names is not in the backup: leave it out of the backups (exclusive_backup_exclude) "
            "or keep that data inside the data directory.")


def run(job):
    p, data, owner = job.p, job.data, job.owner
    if not p.get("minimal_config"):
        backed_up = BackedUpConfig(job.backup_dir, job.record, data)
        replaced = set(name for name, _value in restore_settings(p)[1])
        if job.debian:
            job.result["config"] = {"debian_cluster": job.debian.label, "config_dir": job.debian.conf_dir, "notes": []}
        else:
            job.result["config"] = {"derived_from": backed_up.setting("config_file", CONF),
                                    "notes": write_derived_config(data, backed_up, replaced)}
        job.result["config"]["notes"] += sanitize_auto_conf(data, backed_up.old_data)
    config_files = make_it_recover(p, data, job.result)
    if p.get("confine_to"):
        confine(data, job.tablespaces, p["confine_to"])
    for path in [data] + job.placed + ([p["waldir"]] if p.get("waldir") else []):
        if os.geteuid() == 0:
            chown_tree(path, owner.pw_uid, owner.pw_gid)
        os.chmod(path, 0o700)
    if os.geteuid() == 0:
        for path in config_files + ([job.tablespaces_dir] if job.tablespaces_dir else []):
            os.chown(path, owner.pw_uid, owner.pw_gid)
