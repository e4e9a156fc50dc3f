#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: pgexclusive.backup maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function
__metaclass__ = type

DOCUMENTATION = r'''
module: pg_backup_finalize
short_description: Make a stopped exclusive backup complete - WAL, restore check, record, repository, retention - in one call
description:
  - The exclusive_backup role's last phase, on the database host, after this run's stop. Its steps, in order, are
    the same code as their own modules.
  - 1. With O(include_wal), the WAL from start to stop into the backup (M(pgexclusive.backup.pg_backup_wal)).
  - 1b. The configuration files outside the data directory (C(config_file), C(hba_file), C(ident_file) and what they
    include, e.g. Debian's C(/etc/postgresql/<major>/<cluster>/)) copied into C(config/); see RV(config_files).
  - 2. With O(verify_restore), the restore check (M(pgexclusive.backup.pg_verify_restore)).
  - 3. C(backup.json), last and durably, C(complete) only when the facts show a restorable backup
    (M(pgexclusive.backup.pg_backup_record)).
  - 4. With O(repository), the record sent to the copy there (M(pgexclusive.backup.pg_backup_copy) with
    O(pgexclusive.backup.pg_backup_copy#module:send_record)).
  - 5. With O(retention), this cluster's complete backups beyond the newest O(retention) removed
    (M(pgexclusive.backup.pg_backup_retention)).
  - When a step before the record is complete fails, C(backup.json) says C(failed) with the step and the reason,
    and the module fails with RV(complete) false. When retention fails, the backup is complete and the module
    fails with RV(complete) true.
  - The facts come from O(parts), each phase's part of C(backup.json), as for
    M(pgexclusive.backup.pg_backup_record); the steps here add their own (C(wal_included), C(config_files),
    C(verify_restore), C(checks)).
version_added: 0.1.0
author: pgexclusive.backup maintainers (@pgexclusive)
options:
  backup_dir:
    description: The backup directory, C(<dest>/<label>), on the database host (with a repository, the one that holds the record).
    type: path
    required: true
  parts:
    description:
      - The parts of C(backup.json), as for M(pgexclusive.backup.pg_backup_record)
        O(pgexclusive.backup.pg_backup_record#module:parts), the run's own (C(phase) C(run)) and the C(record_part)
        of M(pgexclusive.backup.pg_backup_preflight), M(pgexclusive.backup.pg_start_backup),
        M(pgexclusive.backup.pg_backup_copy) and M(pgexclusive.backup.pg_stop_backup).
      - The WAL files come from the start and stop parts, the cluster retention keeps from the copy and run parts.
      - O(parts) or O(results) is required.
    type: list
    elements: dict
    default: []
  results:
    description:
      - Deprecated, to be removed in 1.0.0; use O(parts). The results of the run's tasks by task, as for
        O(pgexclusive.backup.pg_backup_record#module:results).
    type: dict
    default: {}
  manifest:
    description:
      - Write C(backup_manifest) for a plain or tar copy (see M(pgexclusive.backup.pg_backup_record)), after the stop.
      - With O(repository) on another host, the copy there is read back over ssh (one C(tar -c) on the repository
        host, checksummed here) and the manifest goes to the repository with the record; this reads the copy's
        bytes back across the network once.
    type: bool
    default: false
  include_wal:
    description: Put the WAL from start to stop (and the backup history file) into the backup.
    type: bool
    default: false
  wal_archive_dir:
    description: The WAL archive, uncompressed files, for O(include_wal) and the restore check.
    type: path
  verify_restore:
    description: Restore the backup into a throwaway server and check it, before the record.
    type: bool
    default: false
  verify_restore_bindir:
    description: The PostgreSQL binaries of the restore check; default those of the running server.
    type: path
  verify_restore_timeout:
    description: Seconds the restored server may take to become consistent.
    type: int
    default: 300
  verify_restore_work_dir:
    description: Where the throwaway copy goes; default beside O(backup_dir).
    type: path
  repository:
    description: The repository the copy went to, C([user@]host:/path); the record is sent there last.
    type: str
  ssh_user:
    description: The login on the repository host.
    type: str
  ssh_key:
    description: A private key file on the database host for the repository.
    type: path
  ssh_options:
    description: More ssh arguments, each its own item (see M(pgexclusive.backup.pg_backup_copy)).
    type: list
    elements: str
    default: []
  dest:
    description: The directory that holds the backups, for O(retention).
    type: path
  retention:
    description: Keep this many complete backups of this cluster under O(dest); 0 keeps all.
    type: int
    default: 0
extends_documentation_fragment:
  - pgexclusive.backup.checks.finalize
attributes:
  check_mode:
    support: full
    description: Writes and removes nothing, starts no restore; returns the record it would write.
seealso:
  - module: pgexclusive.backup.pg_backup_record
  - module: pgexclusive.backup.pg_backup_wal
  - module: pgexclusive.backup.pg_verify_restore
  - module: pgexclusive.backup.pg_backup_retention
'''

EXAMPLES = r'''
- name: Finish the backup, with its WAL and a restore check, keeping 7
  pgexclusive.backup.pg_backup_finalize:
    backup_dir: /srv/backups/{{ label }}
    manifest: true
    include_wal: true
    wal_archive_dir: /srv/wal-archive
    verify_restore: true
    dest: /srv/backups
    retention: 7
    parts:
      - phase: run
        facts: {label: "{{ label }}", host: "{{ inventory_hostname }}", method: rsync, compression: none,
                data_directory: /var/lib/postgresql/16/main}
      - "{{ checked.record_part }}"
      - "{{ started.record_part }}"
      - "{{ copied.record_part }}"
      - "{{ stopped.record_part }}"
  become: true
'''

RETURN = r'''
complete:
  description: Whether C(backup.json) says complete (also on a failure, to tell a failed backup from a failed retention).
  returned: always
  type: bool
record:
  description: The content of backup.json.
  returned: success, and on failure when written
  type: dict
path:
  description: Where backup.json is.
  returned: when written
  type: str
manifest:
  description:
    - The manifest written (C(path), C(files), C(bytes), C(verify), C(format), C(duration)); null without one.
    - For a copy in a repository on another host also C(read_back_from) (where it was read) and C(verify_on); its
      C(verify) command names the repository's paths.
  returned: success
  type: dict
wal_files:
  description: The WAL files put into the backup; null without O(include_wal).
  returned: success
  type: list
  elements: str
wal_location:
  description: Where in the backup they are (C(data/pg_wal), C(pg_wal) or C(pg_wal.tar[.gz|.zst])).
  returned: success
  type: str
config_files:
  description:
    - The server's configuration files that lie outside the data directory (Debian's
      C(/etc/postgresql/<major>/<cluster>/)), copied into C(config/) of the backup under their absolute paths;
      C(backup.json) keeps the same as C(config_files). Null without an C(info) part with C(config_settings).
    - C(settings) (C(config_file), C(hba_file), C(ident_file) as the server reported them), C(files) (each C(what),
      C(path), C(named_by), C(stored), C(size), C(sha256), C(mode)), C(dirs) (the C(include_dir) directories outside),
      C(missing) (what a setting or directive names but is missing, a symbolic link - never followed - or not a
      regular file), and C(unknown) when the login may not read the settings.
    - They are not in C(backup_manifest), which C(pg_verifybackup) checks against the data directory.
  returned: success
  type: dict
verify:
  description: The restore check's result as M(pgexclusive.backup.pg_verify_restore) returns it; null without O(verify_restore).
  returned: success
  type: dict
sent:
  description: What was sent to the repository (C(repository), C(sent), C(commands)); null without O(repository).
  returned: success
  type: dict
retention:
  description: Retention's plan (C(removed), C(kept), C(failed_backups), C(other_clusters), C(unidentified), C(unproved)); null without O(retention).
  returned: success
  type: dict
removed:
  description: The labels retention removed.
  returned: success
  type: list
  elements: str
step:
  description: The step that failed (C(wal), C(config), C(verify_restore), C(record), C(send_record), C(retention)).
  returned: failure
  type: str
record_written:
  description: Whether backup.json (failed, or complete before a failed retention) was written.
  returned: failure
  type: bool
durations:
  description: Seconds each step took, by step.
  returned: always
  type: dict
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.pgexclusive.backup.plugins.module_utils.finalize import finalize, finalize_argument_spec
from ansible_collections.pgexclusive.backup.plugins.module_utils.module_runner import run_module


def main():
    run_module(AnsibleModule(argument_spec=finalize_argument_spec(), supports_check_mode=True), finalize,
               needs_database=False)


if __name__ == "__main__":
    main()
