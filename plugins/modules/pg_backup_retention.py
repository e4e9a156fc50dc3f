#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: pgexclusive.backup maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function
__metaclass__ = type

DOCUMENTATION = r'''
---
module: pg_backup_retention
short_description: Keep the newest N complete exclusive backups
description:
  - Looks at every directory of O(dest) that holds a C(backup.json), keeps the newest O(keep) whose
    status is complete (by C(finished_at)), and removes the other complete ones.
  - Never removes O(current) (the backup just taken), failed backups (reported in RV(failed_backups) for a
    person to look at), or directories without C(backup.json).
version_added: 0.1.0
author: pgexclusive.backup maintainers (@pgexclusive)
options:
  dest:
    description: The directory holding one directory per backup.
    type: path
    required: true
  keep:
    description: How many complete backups to keep; 0 keeps all.
    type: int
    required: true
  current:
    description: The label of the backup just taken; never removed.
    type: str
    required: true
notes:
  - Check mode reports what would be removed and removes nothing.
'''

EXAMPLES = r'''
- name: Keep the seven newest backups
  pgexclusive.backup.pg_backup_retention:
    dest: /srv/backups
    keep: 7
    current: "{{ label }}"
'''

RETURN = r'''
removed:
  description: The labels of the backups removed (or that would be, in check mode).
  returned: always
  type: list
  elements: str
kept:
  description: The labels of the complete backups kept.
  returned: always
  type: list
  elements: str
failed_backups:
  description: Labels of failed backups left in place.
  returned: always
  type: list
  elements: str
'''

import os
import shutil

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.pgexclusive.backup.plugins.module_utils.backup_record import retention_plan, scan_backups


def main():
    module = AnsibleModule(
        argument_spec=dict(
            dest=dict(type="path", required=True),
            keep=dict(type="int", required=True),
            current=dict(type="str", required=True),
        ),
        supports_check_mode=True,
    )
    p = module.params
    records = scan_backups(p["dest"])
    remove = retention_plan(records, p["keep"], p["current"])
    kept = sorted(l for l, r in records.items() if r and r.get("status") == "complete" and l not in remove)
    failed = sorted(l for l, r in records.items() if not r or r.get("status") != "complete")
    if not module.check_mode:
        for label in remove:
            shutil.rmtree(os.path.join(p["dest"], label))
    module.exit_json(changed=bool(remove), removed=remove, kept=kept, failed_backups=failed)


if __name__ == "__main__":
    main()
