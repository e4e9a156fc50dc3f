#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: pgexclusive.backup maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function
__metaclass__ = type

DOCUMENTATION = r'''
---
module: pg_backup_catalog
short_description: List every exclusive backup under a destination, per cluster, and whether it can be restored
description:
  - Runs on the host that holds O(dest) (the database host for a local destination, the repository host for a
    repository) and lists every directory there, grouped per cluster (system identifier, host, data directory),
    with label, status, method, compression, start and stop time, time in backup mode, copy duration, sizes, WAL range,
    whether the WAL is included, and the latest restore drill (the last entry of C(backup.json)'s C(checks)).
  - Each backup is RV(backups[].restorable) or not, with RV(backups[].problems), each saying what is wrong and what to
    do - a failed status with its recorded error, a failed latest drill, a missing or damaged C(backup_manifest), a copy
    whose own C(backup_label) does not start where C(backup.json) says, and, with O(archive_dir), WAL from the
    backup's start to its stop that is missing from the archive (for a backup that does not include its WAL).
  - Directories without C(backup.json), unreadable or oversized records, records of an unknown format or of the wrong
    types, and symbolic links are listed too, as not restorable, with why.
  - Per cluster, the newest restorable backup and the newest verified restore (a restorable backup whose latest drill
    passed), with their ages in seconds; newest is by start LSN, never by a date C(backup.json) holds.
  - Read only. Nothing under O(dest) is written, and a backup is untrusted input; every file is opened beneath O(dest)
    without following a symbolic link, and no link in O(dest) or in a backup directory is read through.
version_added: 0.3.0
author: pgexclusive.backup maintainers (@pgexclusive)
options:
  dest:
    description: The directory holding one directory per backup (the role's C(exclusive_backup_dest)).
    type: path
    required: true
  archive_dir:
    description:
      - The WAL archive directory on this host. When given, every complete backup that does not include its WAL is
        checked for each segment from its start to its stop there (only the names are looked up).
      - Without it (and without O(archive_dirs)), WAL is not checked, and RV(summary.wal_checked) says so.
    type: path
    aliases: [wal_archive_dir]
  archive_dirs:
    description:
      - For a O(dest) that several clusters share, each with an archive of its own, a mapping of system identifier
        to that cluster's WAL archive directory. A backup of a cluster named here is checked against that directory, any other against
        O(archive_dir) (when given).
    type: dict
    default: {}
  verify_files:
    description:
      - Also check every file of each complete copy against its C(backup_manifest) (size and SHA256), as a restore
        does. This reads every byte under O(dest); without it only the manifest's own checksum is checked.
    type: bool
    default: false
notes:
  - Check mode is supported and does exactly the same, since the module only reads.
  - A tar copy's C(backup_label) is the last member of its archive, so, as in retention, it is not read (the restore
    proves the copy it restores); O(verify_files) checks the archives' members against the manifest.
seealso:
  - module: pgexclusive.backup.pg_backup_retention
  - module: pgexclusive.backup.pg_verify_restore
'''

EXAMPLES = r'''
- name: List the backups and show them as a table
  pgexclusive.backup.pg_backup_catalog:
    dest: /srv/backups
    archive_dir: /srv/wal-archive
  register: catalog

- name: Show the table
  ansible.builtin.debug:
    var: catalog.table

- name: Fail when a cluster has no restorable backup younger than a day
  ansible.builtin.assert:
    that: item.newest_restorable_age is not none and item.newest_restorable_age < 86400
  loop: "{{ catalog.clusters | selectattr('system_identifier') }}"
  loop_control:
    label: "{{ item.system_identifier }}"
'''

RETURN = r'''
backups:
  description: One entry per directory (or symbolic link) of O(dest), in name order.
  returned: always
  type: list
  elements: dict
  contains:
    label:
      description: The directory's name (bytes that are not UTF-8 shown as C(\xNN)).
      type: str
    path:
      description: The directory's path.
      type: str
    status:
      description: C(complete), C(failed), what an unknown record says, or null without a readable C(backup.json).
      type: str
    cluster:
      description: The C(system_identifier), C(host) and C(data_directory) C(backup.json) names (null when none).
      type: dict
    method:
      description: tar, rsync, copy or command.
      type: str
    compression:
      description: none, gzip or zstd.
      type: str
    start_time:
      description: When backup mode began, as the server wrote it.
      type: str
    stop_time:
      description: When backup mode ended (start plus RV(backups[].duration)), UTC, or when the record was written.
      type: str
    duration:
      description: Seconds in backup mode.
      type: float
    copy_duration:
      description: Seconds the copy took.
      type: float
    bytes:
      description: Bytes of the data directory and tablespaces copied.
      type: int
    output_bytes:
      description: Bytes the copy's outputs take in O(dest).
      type: int
    timeline:
      description: The timeline of the backup's start.
      type: int
    start_lsn:
      description: Where the backup starts.
      type: str
    stop_lsn:
      description: Where it stops.
      type: str
    start_wal_file:
      description: The first WAL segment it needs.
      type: str
    stop_wal_file:
      description: The last WAL segment it needs.
      type: str
    wal_included:
      description: Whether the backup holds its WAL itself (include_wal).
      type: bool
    wal_checked:
      description: Whether its WAL was looked up in an archive (O(archive_dir) or O(archive_dirs)).
      type: bool
    drill:
      description: The latest restore drill (C(ok), C(time), C(check_ran), C(error)); null when never drilled.
      type: dict
    restorable:
      description: True when none of RV(backups[].problems) applies.
      type: bool
    problems:
      description: Why it cannot be restored; each with C(kind), C(message) (what is wrong) and C(hint) (what to do).
        The kinds are listed in the collection's docs/catalog.md.
      type: list
      elements: dict
clusters:
  description: Per cluster, its backups newest first (by start LSN) and where it stands. Directories that name no
    cluster form one entry whose C(system_identifier) is null.
  returned: always
  type: list
  elements: dict
  contains:
    system_identifier:
      description: The cluster's system identifier.
      type: str
    host:
      description: The inventory host the backups were taken on.
      type: str
    data_directory:
      description: The cluster's data directory.
      type: str
    backups:
      description: The labels of its backups, newest first.
      type: list
      elements: str
    newest_restorable:
      description: The label of its newest restorable backup, or null.
      type: str
    newest_restorable_stop_time:
      description: When that backup's backup mode ended, UTC.
      type: str
    newest_restorable_age:
      description: Seconds since then.
      type: float
    newest_verified:
      description: The label of its newest restorable backup whose latest drill passed, or null.
      type: str
    newest_verified_at:
      description: When that drill ran.
      type: str
    newest_verified_age:
      description: Seconds since that drill.
      type: float
summary:
  description: The counts, and what was checked.
  returned: always
  type: dict
  contains:
    dest:
      description: O(dest) as given.
      type: str
    archive_dir:
      description: O(archive_dir) as given.
      type: str
    checked_at:
      description: When the catalog was read, UTC; the ages count from then.
      type: str
    backups:
      description: How many entries RV(backups) has.
      type: int
    restorable:
      description: How many of them are restorable.
      type: int
    unrestorable:
      description: How many are not.
      type: int
    clusters:
      description: How many entries RV(clusters) has.
      type: int
    wal_checked:
      description: How many backups had their WAL looked up in an archive (O(archive_dir) or O(archive_dirs)).
      type: int
    files_checked:
      description: Whether O(verify_files) checked the copies' files against their manifests.
      type: bool
table:
  description: The catalog as lines of a fixed-width text table, for C(debug) with C(var).
  returned: always
  type: list
  elements: str
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.pgexclusive.backup.plugins.module_utils.catalog import catalog, catalog_argument_spec
from ansible_collections.pgexclusive.backup.plugins.module_utils.module_runner import run_module


def main():
    run_module(AnsibleModule(argument_spec=catalog_argument_spec(), supports_check_mode=True), catalog,
               needs_database=False)


if __name__ == "__main__":
    main()
