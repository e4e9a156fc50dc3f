#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: pgexclusive.backup maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function
__metaclass__ = type

DOCUMENTATION = r'''
---
module: pg_archive_check
short_description: Check that WAL archiving works before an exclusive backup
description:
  - V(passive) reads the archive settings and C(pg_stat_archiver) and fails when archiving is off,
    has no command or library, or its last attempt failed.
  - V(active) does the same, then creates a restore point (so the WAL switch is never a no-op),
    switches WAL and waits up to O(timeout) seconds until that segment is archived; it fails sooner when
    PostgreSQL's archiver has failed three times in a row (it then sleeps a minute before trying again).
  - Fails with what is wrong and what to do; a backup should not start when this fails.
version_added: 0.1.0
author: pgexclusive.backup maintainers (@pgexclusive)
extends_documentation_fragment:
  - pgexclusive.backup.connection
options:
  mode:
    description: V(active) or V(passive).
    type: str
    choices: [active, passive]
    default: active
  label:
    description: The backup's label, used in the restore point's name.
    type: str
    default: pgexclusive.backup
  timeout:
    description: Seconds to wait for the switched segment to be archived (active); the check fails sooner once the archiver has failed three times in a row.
    type: int
    default: 60
notes:
  - In check mode, the active check behaves like the passive one (no restore point, no switch).
'''

EXAMPLES = r'''
- name: Prove archiving works
  pgexclusive.backup.pg_archive_check:
    mode: active
    timeout: 120
    login_db: backupctl
'''

RETURN = r'''
healthy:
  description: Archiving works.
  returned: success
  type: bool
reason:
  description: Why it is considered healthy.
  returned: always
  type: str
switched_wal_file:
  description: The segment switched out and found archived (active).
  returned: when mode is active
  type: str
settings:
  description: archive_mode, archive_command, archive_library, wal_level, archive_timeout.
  returned: always
  type: dict
archiver:
  description: The pg_stat_archiver row.
  returned: always
  type: dict
queries:
  description: The SQL run.
  returned: always
  type: list
  elements: str
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.pgexclusive.backup.plugins.module_utils.wal import check_argument_spec, verify_archiving
from ansible_collections.pgexclusive.backup.plugins.module_utils.module_runner import run_module


def main():
    run_module(AnsibleModule(argument_spec=check_argument_spec(), supports_check_mode=True), verify_archiving)


if __name__ == "__main__":
    main()
