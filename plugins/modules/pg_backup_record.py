#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: pgexclusive.backup maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function
__metaclass__ = type

DOCUMENTATION = r'''
---
module: pg_backup_record
short_description: Write backup.json and backup_manifest of an exclusive backup
description:
  - Writes C(backup.json) in the backup directory, holding the given facts (label, cluster, LSNs, WAL files,
    timeline, times, server version, API, method, sizes, ...) and the status.
  - C(complete) means restorable. With O(status=complete) the record says complete only when O(facts) name
    the C(label), C(start_lsn), C(stop_lsn) and C(stop_wal_file), and the WAL from start to stop is
    archived (C(archived) true) or included (C(wal_included) a non-empty list). Otherwise C(backup.json) says
    failed, its C(error) says what is missing, and the module fails.
  - Before a complete record, every file and directory of the backup directory is fsynced; C(backup.json)
    is written last, atomically (temporary file, fsync, rename, fsync of the directory), mode 0644. When
    the manifest or the fsync fails, the record says failed, with why, and the module fails.
  - With O(manifest) and a plain copy (C(data/) in the backup directory), writes C(backup_manifest) in
    PostgreSQL's format (version 1, SHA256 checksums, the WAL range of the backup), so that
    C(pg_verifybackup -m <backup_dir>/backup_manifest <backup_dir>/data) checks the copy. Add C(-n)
    when the WAL is not in C(data/pg_wal/), or C(--wal-directory=<archive>). A symbolic link in the copy
    that leads out of the backup directory (a live tablespace, the live C(pg_wal)) fails the record.
  - With O(manifest) and a tar copy (C(base.tar[.gz|.zst]) in the backup directory), the manifest lists the
    files inside C(base.tar) and each C(<oid>.tar) (as C(pg_tblspc/<oid>/<path>)), read back from the archives;
    C(pg_wal.tar) is WAL and not listed. PostgreSQL 18's
    C(pg_verifybackup -F t -n -i backup.json -m <backup_dir>/backup_manifest <backup_dir>) checks it (its build
    must support the archives' compression); older ones read plain copies only (15's has no C(-F)), and the
    command recorded in the manifest's C(verify) says so in a shell comment. An archive that cannot be read
    to its end fails the record.
version_added: 0.1.0
author: pgexclusive.backup maintainers (@pgexclusive)
options:
  backup_dir:
    description:
      - The backup directory, C(<dest>/<label>).
      - Created (mode 0700) when missing, so that a run that started a backup and failed before its copy
        created the directory still leaves a C(backup.json). Call it only for runs that started a backup.
    type: path
    required: true
  status:
    description: C(complete) or C(failed). A complete status the facts do not support is recorded as failed.
    type: str
    choices: [complete, failed]
    required: true
  facts:
    description:
      - What to record; keys with null values are left out.
      - C(system_identifier), C(data_directory) and C(host) name the cluster; M(pgexclusive.backup.pg_backup_retention)
        removes only backups whose record names its cluster.
    type: dict
    default: {}
  parts:
    description:
      - The parts of the record, to take its fields from (the role passes them; O(facts) override what they give),
        each with C(phase) and C(facts), as the RV(pgexclusive.backup.pg_start_backup#module:record_part) of
        M(pgexclusive.backup.pg_backup_preflight) (C(info)), M(pgexclusive.backup.pg_start_backup) (C(start)),
        M(pgexclusive.backup.pg_backup_copy) (C(copy)), M(pgexclusive.backup.pg_stop_backup) (C(stop)) and
        M(pgexclusive.backup.pg_backup_wal) (C(wal)) return it, and the run's own, C(phase) C(run) with C(facts)
        C(label), C(host), C(method), C(compression) and C(data_directory).
      - A phase that did not run has no part; a part holds every field its phase owns (null for what it does not
        know), or the module fails. A field several phases own comes from the first with a value (C(data_directory)
        from the copy, else the run; C(api) from the start, else the preflight).
    type: list
    elements: dict
    default: []
  results:
    description:
      - Deprecated, to be removed in 1.0.0; use O(parts), which it cannot be given with.
      - The results of the run's tasks as registered, by task (C(run), C(info), C(start), C(copy), C(stop),
        C(wal), C(verify)), to pick the record's fields from. A task that did not run (missing, null, or skipped)
        gives nothing.
    type: dict
    default: {}
  manifest:
    description:
      - Write C(backup_manifest) for a plain or tar copy in the backup directory. Needs C(timeline), C(start_lsn) and
        C(stop_lsn) in O(facts).
    type: bool
    default: false
notes:
  - Check mode writes nothing and returns the record it would write.
  - With a remote rsync target the copy is on another host; only the local backup directory is fsynced here.
'''

EXAMPLES = r'''
- name: Record the backup
  pgexclusive.backup.pg_backup_record:
    backup_dir: /srv/backups/{{ label }}
    status: complete
    manifest: true
    facts:
      label: "{{ label }}"
      host: "{{ inventory_hostname }}"
      system_identifier: "{{ copied.system_identifier }}"
      data_directory: "{{ copied.data_directory }}"
      timeline: 1
      start_lsn: 0/2000028
      stop_lsn: 0/2000100
      stop_wal_file: "000000010000000000000002"
      archived: true
'''

RETURN = r'''
record:
  description: The content of backup.json.
  returned: success
  type: dict
path:
  description: Where backup.json is.
  returned: when written
  type: str
manifest:
  description:
    - The manifest written, with C(path), C(files), C(bytes), C(verify) (the pg_verifybackup command), C(format)
      (V(plain) or V(tar)) and C(duration) (seconds spent reading the copy and writing the manifest); null without one.
  returned: success
  type: dict
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.pgexclusive.backup.plugins.module_utils.backup_record import record_argument_spec, record_backup
from ansible_collections.pgexclusive.backup.plugins.module_utils.module_runner import run_module


def main():
    run_module(AnsibleModule(argument_spec=record_argument_spec(), supports_check_mode=True), record_backup,
               needs_database=False)


if __name__ == "__main__":
    main()
