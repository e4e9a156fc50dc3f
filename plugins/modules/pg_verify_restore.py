#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: pgexclusive.backup maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function
__metaclass__ = type

DOCUMENTATION = r'''
---
module: pg_verify_restore
short_description: Restore drill - restore an exclusive backup into a throwaway server, run SQL checks, keep the result
description:
  - The restore drill. Runs the restore engine (the same code as M(pgexclusive.backup.pg_backup_restore)) into a scratch
    directory, starts a throwaway server on the copy as the owner of the live data directory, on a free port, on a
    private Unix socket only, with C(recovery_target = 'immediate') and C(recovery_target_action = 'promote'), runs
    the O(checks) on it once it is promoted, then stops it by its PID and removes the scratch directory (unless
    O(keep)), whatever happened.
  - The backup is O(backup_dir), complete or not, or the newest C(complete) backup under O(dest) (of the cluster
    O(system_identifier)).
  - Nothing it runs writes outside the scratch directory. The copy's C(pg_wal) (and the other directories a backup
    leaves empty) is made a real directory of its own, removing a link to the live WAL as a link; every
    C(pg_tblspc) link and C(tablespace_map) line is pointed at the copy's own tablespace directories; any other
    link out of the scratch directory, or a tablespace with no copy in the backup, stops the check before a server
    starts.
  - The server reads only a minimal configuration written for it. The copy's C(postgresql.conf) is replaced whole
    and C(postgresql.auto.conf) emptied (the originals are kept in C(live-config/) of the scratch directory), so
    none of the live server's include files, C(ALTER SYSTEM) settings, archive or cleanup commands,
    C(shared_preload_libraries) or memory settings apply; archiving and C(hot_standby) are off.
  - WAL comes from the backup's own C(pg_wal/) and, with O(wal_archive_dir), from the archive, which is only read.
  - Succeeds when the server reached consistency, was promoted, answered, and passed every check.
  - Each drill's result is added to the backup's C(backup.json) under C(checks) (time, ok, duration, the checks'
    results, the error), written atomically; nothing else of C(backup.json) changes, its C(status) never. When the
    backup directory is read-only, the drill's result still returns, with a warning.
  - When the check cannot run (no C(pg_ctl), the server's OS user cannot enter the scratch directory, which is
    tested as that user before anything is copied, or the host keeps the server from starting - its socket, port
    or shared memory) it fails saying so, with RV(check_ran=false), which says nothing about the backup. Only a
    server that started and then failed recovery, or a failed check, makes it report against the backup.
version_added: 0.1.0
author: pgexclusive.backup maintainers (@pgexclusive)
requirements:
  - psycopg2 on the host that runs the module
options:
  backup_dir:
    description: The backup directory, C(<dest>/<label>). Give this or O(dest).
    type: path
  dest:
    description: The backup destination; the newest complete backup there is drilled.
    type: path
    version_added: 0.2.0
  system_identifier:
    description: With O(dest), the cluster whose newest complete backup to drill (needed when it holds several).
    type: str
    version_added: 0.2.0
  data_directory:
    description:
      - The live server's data directory (its owner runs the throwaway server; its postmaster tells the binaries).
      - Default the C(data_directory) that C(backup.json) names.
    type: path
  bindir:
    description: Directory of C(pg_ctl) and C(postgres); default the running server's.
    type: path
  wal_archive_dir:
    description:
      - The WAL archive, only ever read, as C(restore_command = 'cp <dir>/%f %p').
      - Without it C(restore_command = 'false'), and the WAL must be in the backup (include_wal).
    type: path
  work_dir:
    description:
      - Where to create the scratch directory; default the parent of O(backup_dir). Needs room for one more copy.
      - The owner of the live data directory must be able to enter it (every directory on the way open to it).
    type: path
  timeout:
    description: Seconds to wait for the start and for recovery to finish; also each check's C(statement_timeout).
    type: int
    default: 300
  keep:
    description: Keep the scratch directory (for a person to look at).
    type: bool
    default: false
  login_user:
    description:
      - The role the throwaway server is asked as, over its private socket (trusted there), to see it promoted and
        to run the O(checks).
      - Default the name of the live data directory's owner, which C(initdb) makes the bootstrap superuser.
    type: str
    version_added: 0.2.0
extends_documentation_fragment:
  - pgexclusive.backup.checks
notes:
  - Check mode starts nothing.
  - C(playbooks/restore_drill.yml) runs this module on a chosen backup.
'''

EXAMPLES = r'''
- name: Prove the backup restores
  pgexclusive.backup.pg_verify_restore:
    backup_dir: /srv/backups/{{ label }}
    data_directory: /var/lib/postgresql/15/main
    wal_archive_dir: /srv/wal-archive

- name: Drill the newest complete backup, with checks of the data
  pgexclusive.backup.pg_verify_restore:
    dest: /srv/backups
    wal_archive_dir: /srv/wal-archive
    checks:
      - name: orders are there
        db: shop
        sql: SELECT count(*) > 0 FROM orders
        expect: true
      - name: the last migration ran
        db: shop
        sql: SELECT version FROM schema_migrations ORDER BY version DESC LIMIT 1
        expect: "20261121"
'''

RETURN = r'''
ok:
  description: The restored copy reached consistency, answered, and passed every check.
  returned: always
  type: bool
check_ran:
  description:
    - Whether a server was started on the restored copy, so that RV(ok) says whether the backup restores.
    - V(false) on failure means the check stopped before starting one. Either it could not run (no C(pg_ctl), a
      scratch directory out of the server's OS user's reach, a socket or port the host refused), and the message
      says that this says nothing about the backup; or it refused to, because the backup is not self-contained (a
      tablespace without a copy, a link out of the scratch directory). V(false) in check mode too.
  returned: always
  type: bool
backup_dir:
  description: The backup drilled.
  returned: always
  type: str
checks:
  description: Each check's result - C(name), C(ok), C(returned) (the first column of the first row, as text, or
    null), and C(error) when its SQL failed.
  returned: when the server was promoted
  type: list
  elements: dict
history_entry:
  description: The drill's entry in the C(checks) history of C(backup.json) - C(time), C(ok), C(check_ran),
    C(duration), C(checks), and C(error) when it failed.
  returned: when not in check mode
  type: dict
history_written:
  description: Whether RV(history_entry) was added to C(backup.json) (false when the backup has none yet, or its
    directory is read-only; a warning then says why).
  returned: when not in check mode
  type: bool
databases:
  description: Number of databases the restored server holds.
  returned: success
  type: int
server_version:
  description: Version of the restored server.
  returned: success
  type: str
duration:
  description: Seconds from start to the last check.
  returned: success
  type: float
log:
  description: The last lines of the restored server's log.
  returned: success
  type: list
  elements: str
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.pgexclusive.backup.plugins.module_utils.module_runner import run_module
from ansible_collections.pgexclusive.backup.plugins.module_utils.restore.verify_restore import (
    verify_restore_argument_spec, verify_restore_task)


def main():
    run_module(AnsibleModule(argument_spec=verify_restore_argument_spec(), supports_check_mode=True,
                             required_one_of=[("backup_dir", "dest")], mutually_exclusive=[("backup_dir", "dest")]),
               verify_restore_task)


if __name__ == "__main__":
    main()
