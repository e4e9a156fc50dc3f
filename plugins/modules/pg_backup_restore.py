#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: pgexclusive.backup maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function
__metaclass__ = type

DOCUMENTATION = r'''
---
module: pg_backup_restore
short_description: Restore a backup of this collection into a data directory, to a point in time
description:
  - "Runs as phases: choose, prove, check targets, lay out, configure, recover, report; a failure names its phase
    (RV(phase)). Nothing is written before the lay-out, so a restore refused earlier leaves every target as it was."
  - Chooses a backup, either O(backup_dir) or the newest C(complete) backup under O(dest) (of the cluster
    O(system_identifier)), and refuses one whose C(backup.json) is not C(complete) unless O(allow_incomplete).
    Newest means the highest start LSN, never the date in C(backup.json), which anyone who can write O(dest) can set.
  - Proves the backup before anything is laid out - its copy's own C(backup_label) starts where C(backup.json) says,
    its own C(global/pg_control) names the cluster C(backup.json) (and O(system_identifier)) names, and its files
    verify against its C(backup_manifest) (see O(verify)). A newest backup that fails its proof is refused by name,
    never passed over for an older one.
  - Refuses a target data directory, O(waldir), or a tablespace's target that is, lies inside or holds a path a
    running server on this host uses (its data directory, C(pg_wal) target, tablespaces; every postmaster, found from
    C(/proc)), with or without O(force). Refuses a target that is not empty; with O(force) a non-empty one is renamed
    aside to C(<path>.pgx-aside-<time>), never deleted. Every target is checked before anything is set aside.
  - Lays the backup out there (plain C(data/), or C(base.tar) with C(.gz) or C(.zst), its tablespaces, the WAL it
    includes), with C(pg_wal) a directory of its own, or O(waldir) linked as C(initdb --waldir) does, and each
    tablespace where O(tablespace_mapping) says, else in a fresh C(<data_directory>.tablespaces/<oid>); never at
    the path the backup's C(tablespace_map) names (C(tablespace_map) is rewritten, RV(tablespaces) says where each
    went); the files belong to O(owner), the directories mode 0700.
  - Keeps C(backup_label); on PostgreSQL 15 and later, a label that still says C(BACKUP METHOD pg_start_backup) is
    changed in the restored copy to C(streamed), so that recovery waits for the end of the backup.
  - Writes C(recovery.signal) and appends the recovery settings (O(target) and its value, O(target_inclusive),
    O(target_timeline), O(target_action), C(restore_command)) to C(postgresql.auto.conf), with C(archive_mode = off);
    the restored server never writes into the WAL archive until you turn archiving back on.
  - Before anything is laid out (and before O(force) sets anything aside), checks that the target is not before
    the backup's end and that every WAL segment from the backup's start to its stop is in the archive directory or
    in the backup (not with a custom O(restore_command)); a restore refused there leaves the target as it was.
  - With O(start) (default), starts the server as O(owner) and waits until it has reached its target (promoted,
    paused, or shut down as O(target_action) says), then reports where it stopped. The server is left running
    (paused in recovery with O(target_action=pause)).
  - A target past the last archived WAL fails, saying where replay ended (RV(replay_end)); PostgreSQL 14 and later
    end recovery with an error when the WAL runs out before the target.
  - Before anything is laid out, lists the WAL archive (and the backup's own WAL) from the backup's start on, along
    the timeline recovery will follow (through the archive's C(.history) files). A segment missing while later
    ones are there is a gap, where recovery would end without an error. A gap before the target (for O(target=lsn),
    before its segment; for V(latest), V(time), V(name) and V(xid), before the newest segment archived, since where
    such a target lies is known only once replay finds it) fails naming the segment, unless O(allow_wal_gap).
    Not with a custom O(restore_command), whose WAL cannot be listed (RV(wal_gap_check) says so).
  - Every restore that started its server says where recovery ended and why (RV(ended_at_lsn), RV(ended_at_time),
    RV(ended_because)).
version_added: 0.2.0
author: pgexclusive.backup maintainers (@pgexclusive)
requirements:
  - psycopg2 on the host that runs the module (to ask the restored server where it stopped)
options:
  backup_dir:
    description: The backup directory, C(<dest>/<label>). Give this or O(dest).
    type: path
  dest:
    description: The backup destination; the newest complete backup of the cluster there is restored.
    type: path
  system_identifier:
    description:
      - The cluster whose backup to restore (C(backup.json) C(system_identifier)).
      - Needed with O(dest) when it holds backups of several clusters.
    type: str
  allow_incomplete:
    description: Restore a backup whose C(backup.json) is not C(complete) (to salvage data only).
    type: bool
    default: false
  allow_wal_gap:
    description:
      - Accept a gap in the WAL archive before the target, and let recovery end at it, without the WAL archived
        after it. Without it, such a restore is refused before anything is laid out.
      - With O(target=latest) the server is promoted at the gap (RV(ended_because) says V(gap at segment <name>)); a
        time, name, xid or LSN target past the gap still fails, as PostgreSQL ends recovery before its target.
    type: bool
    default: false
  verify:
    description:
      - Check every file of the backup against its C(backup_manifest) before restoring it. A plain copy is checked
        with C(pg_verifybackup -n) when O(bindir) (or the PATH) has it, a tar copy with C(pg_verifybackup -F t -n)
        when that is PostgreSQL 18 or later and its build reads the archives' compression; otherwise the collection
        reads every file against the manifest's SHA256 checksums itself.
      - A backup without a C(backup_manifest) cannot be proved and is refused. V(false) restores it unchecked, and
        the result says so (RV(verified) false, RV(verification)).
    type: bool
    default: true
  data_directory:
    description:
      - The target data directory. It must be empty or not exist (see O(force)). Give this or O(debian_cluster).
      - The restored server gets a configuration derived from the backed-up one, in this directory -
        C(postgresql.conf) (from the copy, or from the backup's C(config/) when the source kept it outside its data
        directory, as Debian does), C(pg_hba.conf) and C(pg_ident.conf). Every include is inlined, and the settings
        that name the source cluster (C(data_directory), C(hba_file), C(ident_file), C(external_pid_file),
        C(cluster_name), C(stats_temp_directory)) and archiving (C(archive_command), C(archive_library),
        C(archive_cleanup_command)) are commented out; give the port and socket in O(settings).
      - The data directory of a Debian cluster is refused here - name the cluster in O(debian_cluster).
    type: path
  debian_cluster:
    description:
      - A Debian cluster made by C(pg_createcluster), as C(<major>/<name>) (C(pg_lsclusters) lists them), to
        restore into instead of O(data_directory), e.g. C(15/restored). It must be stopped, and its data directory
        (the one its C(/etc/postgresql/<major>/<name>/postgresql.conf) names) is not empty, so O(force) sets it
        aside.
      - The cluster's own configuration in C(/etc/postgresql/<major>/<name>/) stays as it is; only the recovery
        settings are added, to the restored C(postgresql.auto.conf). The cluster is started with C(pg_ctlcluster)
        (through systemd where it runs), and the restore waits until it has reached its target.
      - O(bindir) defaults to C(/usr/lib/postgresql/<major>/bin); a cluster of another major than the backup's is
        refused.
    type: str
  waldir:
    description: Put C(pg_wal) here, linked from the data directory as C(initdb --waldir) does; empty or new.
    type: path
  tablespace_mapping:
    description:
      - New paths of tablespaces, by OID or by old path (as C(tablespace_map) names them; the old path is only a key).
      - A tablespace it does not name goes to C(<data_directory>.tablespaces/<oid>), never to its old path (on the
        same host that is the live server's tablespace).
    type: dict
    default: {}
  force:
    description:
      - Rename a non-empty target aside (C(<path>.pgx-aside-<time>)) instead of refusing. Nothing is deleted.
      - Never a path a running server uses (its data directory, C(pg_wal) target, tablespaces); that is refused with
        or without it.
    type: bool
    default: false
  owner:
    description: The OS user the server runs as; the restored files are given to it.
    type: str
    default: postgres
  target:
    description:
      - Where recovery stops. V(immediate) as soon as the copy is consistent (the end of the backup); V(latest) at
        the end of the WAL; V(time), V(lsn), V(name) (a restore point) and V(xid) at O(target_time), O(target_lsn),
        O(target_name) or O(target_xid).
    type: str
    default: immediate
    choices: [immediate, latest, time, lsn, name, xid]
  target_time:
    description: The time to stop at, with its time zone, e.g. C(2026-11-21 14:03:00+00).
    type: str
  target_lsn:
    description: The LSN to stop at, e.g. C(0/3000060).
    type: str
  target_name:
    description: The restore point to stop at (created with C(pg_create_restore_point)).
    type: str
  target_xid:
    description: The transaction id to stop at.
    type: str
  target_inclusive:
    description: Stop just after the target (V(true)) or just before it.
    type: bool
    default: true
  target_timeline:
    description: C(recovery_target_timeline) (V(latest), V(current) or a number); default PostgreSQL's (latest).
    type: str
  target_action:
    description: What the server does at the target.
    type: str
    default: promote
    choices: [promote, pause, shutdown]
  wal_archive_dir:
    description: The WAL archive directory, only ever read (C(restore_command = 'cp <dir>/%f %p')).
    type: path
  restore_command:
    description:
      - Any C(restore_command) (e.g. your backup tool's fetch command); wins over O(wal_archive_dir).
      - Without either, the WAL comes from the backup itself (C(include_wal)).
    type: str
  settings:
    description:
      - More settings for the restored server, appended after the recovery settings (e.g. C(port),
        C(unix_socket_directories), C(listen_addresses)), for a restore beside a running server.
    type: dict
    default: {}
  start:
    description: Start the server and wait until it reaches its target. V(false) leaves it ready to start.
    type: bool
    default: true
  bindir:
    description: Directory of C(pg_ctl) and C(postgres) of the backup's major; default the PATH.
    type: path
  log_file:
    description: The server's startup log; default C(<data_directory>.restore.log).
    type: path
  login_user:
    description:
      - The database role asked where recovery stopped, over the restored server's Unix socket.
      - Default the name of O(owner), the OS user that owns the restored data directory (initdb names the
        bootstrap superuser after it).
      - Run as root, the module connects with O(owner)'s effective uid, so peer authentication admits it.
    type: str
  timeout:
    description: Seconds to wait for the target.
    type: int
    default: 3600
notes:
  - Check mode runs the phases up to the check of the targets (choose, prove, check targets), and changes nothing.
  - Run it as root (C(become)) or as O(owner).
'''

EXAMPLES = r'''
- name: Restore the newest backup to 14:03
  pgexclusive.backup.pg_backup_restore:
    dest: /srv/backups
    system_identifier: "7441234567890123456"
    data_directory: /srv/pgdata
    target: time
    target_time: "2026-11-21 14:03:00+00"
    wal_archive_dir: /srv/wal-archive
    bindir: /usr/local/pgsql/bin

- name: Restore the newest backup into the stopped Debian cluster 16/main, keeping its /etc configuration
  pgexclusive.backup.pg_backup_restore:
    dest: /srv/backups
    debian_cluster: 16/main
    # Its data directory holds the cluster's old data: set aside as <path>.pgx-aside-<time>, never deleted.
    force: true
    target: time
    target_time: "2026-11-21 14:03:00+00"
    wal_archive_dir: /srv/wal-archive

- name: Restore one backup beside the live server, to a restore point, and leave it paused
  pgexclusive.backup.pg_backup_restore:
    backup_dir: /srv/backups/nightly-2026-11-21
    data_directory: /srv/restore/data
    waldir: /srv/restore/wal
    tablespace_mapping:
      /srv/tblspc/fast: /srv/restore/fast
    target: name
    target_name: before-migration
    target_action: pause
    wal_archive_dir: /srv/wal-archive
    settings:
      port: 5499
      listen_addresses: ""
      unix_socket_directories: /srv/restore
'''

RETURN = r'''
backup_dir:
  description: The backup restored.
  returned: always
  type: str
label:
  description: Its label.
  returned: always
  type: str
data_directory:
  description: The target data directory (also on failure, once the backup was chosen).
  returned: always
  type: str
config:
  description:
    - The restored server's configuration. Into a plain directory - C(derived_from) (the C(config_file) the source
      read) and C(notes) (each line the derivation commented out or could not inline). Into a Debian cluster -
      C(debian_cluster), C(config_dir) (its own configuration, kept) and C(notes) (what was commented out of the
      copy's C(postgresql.auto.conf)).
  returned: success, unless a drill's minimal configuration
  type: dict
system_identifier:
  description: The system identifier of the cluster the backup is of.
  returned: success
  type: str
target:
  description: The recovery target used.
  returned: success
  type: str
backup_label:
  description: The parsed C(backup_label) of the restored copy (label, start LSN, method before the fix...).
  returned: success
  type: dict
verified:
  description: Whether the backup's files were checked against its C(backup_manifest) (V(false) with O(verify=false)).
  returned: success
  type: bool
verification:
  description:
    - How the backup was (not) checked. C(method) V(pg_verifybackup) with its C(command); V(manifest) (the
      collection's own reader) with the C(files) and C(bytes) checked and the C(reason) pg_verifybackup was not
      used; or V(none) with the C(reason) (O(verify=false)).
  returned: success
  type: dict
phase:
  description: The phase that failed (choose, prove, check_targets, lay_out, configure, recover, report).
  returned: on failure
  type: str
disagreement:
  description: How the backup's C(backup.json) and its copy's own C(backup_label) disagree.
  returned: on that failure
  type: str
copy_system_identifier:
  description: The system identifier the backup's own C(global/pg_control) names, when it is not the one expected.
  returned: on that failure
  type: str
live_server:
  description: The running server (C(pid), C(data_directory)) whose path a target met.
  returned: on that failure
  type: dict
live_path:
  description: The path of that running server the target is, lies inside or holds.
  returned: on that failure
  type: str
set_aside:
  description: What O(force) renamed aside (what -> new name).
  returned: success
  type: dict
tablespaces:
  description:
    - OID -> the directory each tablespace was restored to (O(tablespace_mapping), else
      C(<data_directory>.tablespaces/<oid>)).
  returned: success
  type: dict
waldir:
  description: Where the restored server's WAL lives.
  returned: success
  type: str
label_fixed:
  description: Whether the restored C(backup_label) was changed to C(BACKUP METHOD streamed) (15+).
  returned: success
  type: bool
restore_command:
  description: The C(restore_command) written.
  returned: success
  type: str
settings:
  description: The settings appended to C(postgresql.auto.conf).
  returned: success
  type: dict
started:
  description: Whether the server was started.
  returned: success
  type: bool
running:
  description: Whether it still runs (V(false) after O(target_action=shutdown)).
  returned: when started
  type: bool
promoted:
  description: Whether it left recovery.
  returned: when started
  type: bool
paused:
  description: Whether it is paused at its target.
  returned: when started
  type: bool
reached_lsn:
  description: The last WAL location replayed.
  returned: when running
  type: str
reached_time:
  description: The commit time of the last transaction replayed.
  returned: when running
  type: str
timeline:
  description: The restored server's timeline.
  returned: when running
  type: int
socket_dir:
  description: The restored server's Unix socket directory.
  returned: when running
  type: str
port:
  description: The restored server's port.
  returned: when running
  type: int
ended_at_lsn:
  description: Where recovery ended, the last WAL location replayed (also on a failure, when the log tells).
  returned: when started
  type: str
ended_at_time:
  description: The commit time of the last transaction replayed (also on a failure, when the log tells).
  returned: when started
  type: str
ended_because:
  description:
    - Why recovery ended there. V(target reached); or, for O(target=latest) and for a target past the WAL,
      V(end of archived WAL), V(gap at segment <name>) (accepted with O(allow_wal_gap)), or
      a text starting V(end of the WAL recovery found) with a custom O(restore_command), saying why the WAL was not
      listed for gaps.
  returned: when started, and on a failure past the WAL
  type: str
wal_gap_check:
  description:
    - What the archive listing before the lay-out found. C(checked) V(false) with the C(reason) the WAL was not
      listed (a custom O(restore_command), O(target=immediate), a timeline PostgreSQL decides); otherwise
      C(timeline) (the one recovery follows), C(newest_segment) (the newest on its way), C(gap) (the first
      segment missing before the target, or null) and C(allowed) (O(allow_wal_gap) accepted that gap).
  returned: success, and on a gap refused
  type: dict
wal_gap:
  description: The first WAL segment missing before the target, while later ones are archived.
  returned: on that failure
  type: str
server_error:
  description: The error the restored server answered the restore's connection or query with.
  returned: on that failure
  type: str
log_file:
  description: The server's startup log.
  returned: when started
  type: str
durations:
  description: Seconds each phase took (choose, prove, check_targets, lay_out, configure, recover, report).
  returned: success, and on a failure after the target was checked
  type: dict
missing_wal:
  description: The WAL segment the restore needs and found nowhere (checked before anything is laid out).
  returned: on that failure
  type: str
reached:
  description: The server log's C(recovery stopping) line (where it stopped) after O(target_action=shutdown).
  returned: when shut down at the target
  type: str
replay_end:
  description:
    - Where replay ended as the server's log tells, when recovery stopped without reaching its target
      (e.g. a target past the last archived WAL) - C(segment) (the last restored from the archive), C(lsn)
      (redo done at), C(last_commit) (the time of the last transaction replayed); keys the log does not tell are
      left out.
  returned: on that failure
  type: dict
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.pgexclusive.backup.plugins.module_utils.module_runner import run_module
from ansible_collections.pgexclusive.backup.plugins.module_utils.restore import restore_argument_spec, restore_task


def main():
    run_module(AnsibleModule(argument_spec=restore_argument_spec(), supports_check_mode=True,
                             required_one_of=[("backup_dir", "dest"), ("data_directory", "debian_cluster")],
                             mutually_exclusive=[("backup_dir", "dest")]),
               restore_task)


if __name__ == "__main__":
    main()
