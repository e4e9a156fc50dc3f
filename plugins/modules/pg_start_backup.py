#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: pgexclusive.backup maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function
__metaclass__ = type

DOCUMENTATION = r'''
module: pg_start_backup
short_description: Start an exclusive low-level backup of PostgreSQL
description:
  - Puts the server into exclusive backup mode with C(pg_start_backup), which writes
    C(backup_label) (and C(tablespace_map)) into the data directory. The mode outlives the
    connection, so a later task copies the data directory and M(pgexclusive.backup.pg_stop_backup)
    ends it.
  - PostgreSQL 14 and earlier use the built-in function (RV(api=native)); 15 and later need the
    C(pg_exclusive_backup) extension in O(login_db) (RV(api=extension)).
  - Idempotent per label. A backup with the same O(label) already in progress is reported
    with C(changed=false); a backup with another label makes the module fail, naming that
    label and its start time, and nothing is started or stopped.
  - Refuses a server in recovery (exclusive backups run only on a primary) and C(wal_level=minimal).
  - The label of a backup in progress is read with C(pg_read_file), so the module works from
    any host; a non-superuser needs EXECUTE on C(pg_catalog.pg_read_file) (text, bigint, bigint, boolean)
    and on the start function, and is told the exact C(GRANT) when one is missing.
version_added: 0.1.0
author: pgexclusive.backup maintainers (@pgexclusive)
options:
  label:
    description:
      - Names the backup; written to C(backup_label) and the backup history file.
      - Non-empty, one line, at most 1024 bytes. Quotes and semicolons are stored literally.
      - M(pgexclusive.backup.pg_stop_backup) uses it to stop only this backup.
    type: str
    required: true
  fast:
    description:
      - Request an immediate checkpoint, so the backup starts at once at the cost of an I/O spike.
      - When false, the start waits for a checkpoint spread over C(checkpoint_completion_target).
    type: bool
    default: false
  create_extension:
    description:
      - On PostgreSQL 15 and later, run C(CREATE EXTENSION pg_exclusive_backup) in O(login_db)
        when it is missing there (needs a superuser).
      - Without it, a missing extension makes the module fail with instructions.
      - Ignored on PostgreSQL 14 and earlier.
    type: bool
    default: false
  max_duration:
    description:
      - Lease in seconds. With a value above C(0) the module leaves a watchdog process on the host it
        runs on (the database host), detached from Ansible, that stops this backup when the lease
        expires (if and only if the backup in progress still carries O(label)) and records what it
        did in the state record. It covers the controller being killed or an AWX job cancelled,
        when no C(rescue)/C(always) runs.
      - M(pgexclusive.backup.pg_stop_backup) with this label ends the watchdog. When the watchdog
        stopped the backup first, that stop fails, because the copy is void.
      - C(0) means no limit from the start; O(heartbeat_timeout) may still end the lease.
    type: int
    default: 0
  heartbeat_timeout:
    description:
      - "Follow the controller: with a value above C(0) (at least C(4)) the lease also ends when nobody renewed it
        for this many seconds, and the watchdog then stops this backup. The module's action plugin renews it from
        the controller, every quarter of this time, for as long as the ansible-playbook run that started the
        backup is alive: it leaves a small process on the controller that runs one shell command
        (C(touch -c) of a lease file next to the state record) over the task's connection, with the task's
        become, and that ends when the backup is stopped, when the lease has run out, or when that
        ansible-playbook is gone."
      - "So a run whose controller dies (SIGKILL, SIGTERM as an AWX cancel sends, the SSH connection lost)
        leaves backup mode about this many seconds after its last renewal, however long the copy would have
        taken; and a run that is alive keeps its backup however long the copy takes."
      - "Renewals stop when that ansible-playbook ends: start and stop the backup in one run. To start it in one
        run and stop it in another (a snapshot taken by another tool in between), use O(max_duration) alone
        and set this to C(0)."
      - Give M(pgexclusive.backup.pg_backup_copy) the returned RV(state_record_path), so that the copy ends with
        the lease instead of writing on after its controller is gone.
      - Tested with the C(ssh) and C(local) connections.
      - C(0) means the controller does not renew anything (only O(max_duration) applies).
    type: int
    default: 0
  controller_host:
    description: The controller running the play, for the state record (which run left a backup).
    type: str
  job_id:
    description: The AWX/Tower job id, for the state record.
    type: str
extends_documentation_fragment:
  - pgexclusive.backup.connection
  - pgexclusive.backup.state_dir
attributes:
  check_mode:
    support: full
    description: Reports whether it would start a backup, and the statements it would run.
notes:
  - O(state_dir) must be writable when O(max_duration) or O(heartbeat_timeout) is above C(0); otherwise an unusable
    directory only warns.
  - "Least privilege, run by a superuser in O(login_db), on PostgreSQL 15 and later -
    GRANT EXECUTE ON FUNCTION pg_catalog.pg_start_backup(text, boolean), pg_catalog.pg_stop_backup(),
    pg_catalog.pg_read_file(text, bigint, bigint, boolean) TO backup_user;"
  - "On PostgreSQL 14 and earlier -
    GRANT EXECUTE ON FUNCTION pg_catalog.pg_start_backup(text, boolean, boolean),
    pg_catalog.pg_stop_backup(boolean, boolean), pg_catalog.pg_read_file(text, bigint, bigint, boolean) TO backup_user;"
  - A server that stops while the backup is in progress leaves C(backup_label) behind;
    M(pgexclusive.backup.pg_backup_info) with C(data_directory) explains what to do.
seealso:
  - module: pgexclusive.backup.pg_stop_backup
  - module: pgexclusive.backup.pg_backup_info
'''

EXAMPLES = r'''
- name: Start a backup (PostgreSQL 15+, extension in the backupctl database)
  pgexclusive.backup.pg_start_backup:
    label: "nightly {{ now(utc=true, fmt='%Y-%m-%dT%H:%M:%SZ') }}"
    fast: true
    login_db: backupctl
  register: backup_start

- name: Start a backup on PostgreSQL 14 over TCP as a least-privileged role
  pgexclusive.backup.pg_start_backup:
    label: nightly
    login_host: db1.example.com
    login_user: backup_user
    login_password: "{{ vault_backup_password }}"
    login_db: postgres

- name: Start a backup that ends within a minute of this playbook's death, and copy it with a snapshot
  pgexclusive.backup.pg_start_backup:
    label: snapshot
    login_db: backupctl
    heartbeat_timeout: 60
  register: backup_start

- name: Snapshot, ended by the lease if the controller dies
  pgexclusive.backup.pg_backup_copy:
    label: snapshot
    data_directory: /var/lib/postgresql/15/main
    backup_dir: /srv/backups/snapshot
    method: command
    command: /usr/local/sbin/take-snapshot
    state_record_path: "{{ backup_start.state_record_path }}"

- name: Start a backup held for two hours, to be stopped by another playbook run
  pgexclusive.backup.pg_start_backup:
    label: held
    login_db: backupctl
    max_duration: 7200

- name: Start a backup, creating the extension in a dedicated database first
  pgexclusive.backup.pg_start_backup:
    label: weekly
    login_db: backupctl
    create_extension: true
'''

RETURN = r'''
label:
  description: The backup's label.
  returned: always
  type: str
  sample: nightly 2026-11-21T10:56:35Z
api:
  description: The API used - C(native) (PostgreSQL 14 and earlier) or C(extension).
  returned: always
  type: str
  sample: extension
start_lsn:
  description: WAL location where the backup starts (the checkpoint's redo point). Null in check mode.
  returned: always
  type: str
  sample: 0/2000028
start_wal_file:
  description: WAL segment holding RV(start_lsn); the first file a restore needs.
  returned: always
  type: str
  sample: "000000010000000000000002"
checkpoint_lsn:
  description: Location of the backup's checkpoint record.
  returned: always
  type: str
  sample: 0/2000060
timeline:
  description: Timeline the backup starts on.
  returned: always
  type: int
  sample: 1
start_time:
  description: Start time as C(backup_label) states it, in the server's C(log_timezone).
  returned: always
  type: str
  sample: 2026-11-21 10:56:35 UTC
backup_label:
  description: The text of C(backup_label) as the server wrote it. Null in check mode.
  returned: always
  type: str
  sample: "START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\n..."
tablespace_map:
  description: The entries of C(tablespace_map); empty without tablespaces.
  returned: always
  type: list
  elements: dict
  contains:
    oid:
      description: The tablespace's OID, the link's name in C(pg_tblspc/).
      type: int
    name:
      description: Null (C(tablespace_map) does not name tablespaces).
      type: str
    location:
      description: Where the link points.
      type: str
    path:
      description: The same as RV(tablespace_map[].location), kept for playbooks written before every module reported
        tablespaces in one shape.
      type: str
  sample: [{"oid": 16390, "name": null, "location": "/srv/tblspc/fast", "path": "/srv/tblspc/fast"}]
state_record:
  description: The backup's state record (label, controller_host, job_id, started_at, lease, expires_at,
    outcome, watchdog_pid); null in check mode or without a usable O(state_dir).
  returned: when the module got as far as checking for a backup in progress
  type: dict
state_record_path:
  description: Where the state record is; give it to M(pgexclusive.backup.pg_backup_copy) to end the copy with the lease.
  returned: when the start succeeded with a usable O(state_dir)
  type: str
  sample: /var/lib/pgexclusive-backup/7309871234567890123/0b6e0f8f9a7c1d2e3f4a5b6c.json
heartbeat:
  description: With O(heartbeat_timeout), how the lease is renewed; null without it.
  returned: when the start succeeded with a usable O(state_dir)
  type: dict
  contains:
    lease_file:
      description: The file whose modification time is the last renewal.
      type: str
    timeout:
      description: O(heartbeat_timeout).
      type: int
    interval:
      description: Seconds between renewals.
      type: float
    renew_command:
      description: The shell command that renews the lease on the database host.
      type: str
    keeper_pid:
      description: The PID, on the controller, of the process that renews the lease; null in check mode.
      type: int
earlier_failures:
  description: State records of earlier backups of this cluster that ended badly (lease expired,
    watchdog lost), each reported by one start only, with C(effective_outcome) and C(what_to_do).
  returned: when the start succeeded with a usable O(state_dir)
  type: list
  elements: dict
max_duration:
  description: O(max_duration) as given.
  returned: when the module got as far as checking for a backup in progress
  type: int
  sample: 0
changed:
  description: True when this task started the backup (or created the extension).
  returned: always
  type: bool
queries:
  description: The SQL statements the module ran, and in check mode those it would run.
  returned: always
  type: list
  elements: str
  sample: ["SELECT pg_catalog.pg_start_backup('nightly', true)::text"]
record_part:
  description:
    - This phase's part of C(backup.json), for the C(parts) of M(pgexclusive.backup.pg_backup_finalize) and
      M(pgexclusive.backup.pg_backup_record), with C(phase) (C(start)) and C(facts), each field of C(backup.json) the
      phase owns, null where it has none.
    - A failure carries the facts the phase learned before it failed, null for the rest.
  returned: always
  type: dict
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.pgexclusive.backup.plugins.module_utils.session import (
    start_argument_spec, start_backup)
from ansible_collections.pgexclusive.backup.plugins.module_utils.module_runner import run_module


def main():
    run_module(AnsibleModule(argument_spec=start_argument_spec(), supports_check_mode=True), start_backup,
               record_phase="start")


if __name__ == "__main__":
    main()
