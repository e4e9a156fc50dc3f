#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: pgexclusive.backup maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function
__metaclass__ = type

DOCUMENTATION = r'''
---
module: pg_backup_retention
short_description: Keep the newest N complete exclusive backups of one cluster
description:
  - Looks at every directory of O(dest) that holds a C(backup.json), keeps the newest O(keep) complete
    backups of this cluster (by start LSN, never by the date C(finished_at), which anyone who can write O(dest) can
    set), and removes this cluster's other complete ones.
  - A backup is this cluster's when its C(backup.json) names the same O(system_identifier) and, when
    given, the same O(data_directory) and O(host). Several clusters may share one O(dest); the others'
    backups are never removed (listed in RV(other_clusters)).
  - Never removes O(current) (the backup just taken), the newest complete backup of this cluster,
    failed backups (reported in RV(failed_backups) for a person to look at), backups whose C(backup.json)
    names no system identifier (written by an older version; listed in RV(unidentified)), backups whose copy's own
    C(backup_label) does not start where C(backup.json) says (planted or changed records; listed in RV(unproved),
    never counted among the newest), or directories without C(backup.json) (a backup still being taken).
  - Removes C(backup.json) first, so that a removal cut short leaves nothing that claims to be a
    complete backup.
version_added: 0.1.0
author: pgexclusive.backup maintainers (@pgexclusive)
options:
  dest:
    description: The directory holding one directory per backup.
    type: path
    required: true
  keep:
    description: How many complete backups of this cluster to keep; 0 keeps all (removes nothing).
    type: int
    required: true
  current:
    description: The label of the backup just taken; never removed.
    type: str
    required: true
  system_identifier:
    description: The cluster's system identifier (C(pg_control_system())); only backups recording it are candidates.
    type: str
    required: true
  data_directory:
    description: When given, only backups recording this data directory are candidates.
    type: path
  host:
    description: When given, only backups recording this host (the inventory name the role records) are candidates.
    type: str
notes:
  - Check mode reports what would be removed and removes nothing.
'''

EXAMPLES = r'''
- name: Keep the seven newest backups of this cluster
  pgexclusive.backup.pg_backup_retention:
    dest: /srv/backups
    keep: 7
    current: "{{ label }}"
    system_identifier: "{{ copied.system_identifier }}"
    data_directory: "{{ copied.data_directory }}"
    host: "{{ inventory_hostname }}"
'''

RETURN = r'''
removed:
  description: The labels of the backups removed (or that would be, in check mode).
  returned: always
  type: list
  elements: str
kept:
  description: The labels of this cluster's complete backups kept.
  returned: always
  type: list
  elements: str
failed_backups:
  description: Labels of failed backups (or unreadable C(backup.json)) left in place.
  returned: always
  type: list
  elements: str
other_clusters:
  description: Labels of complete backups left alone because their C(backup.json) names another cluster
    (system identifier, or data directory or host when given).
  returned: always
  type: list
  elements: str
unidentified:
  description: Labels of complete backups left alone because their C(backup.json) names no system identifier
    (written before it was recorded); remove them by hand when no longer needed.
  returned: always
  type: list
  elements: str
unproved:
  description: Labels of complete backups left alone, neither counted nor removed, because their C(backup.json)
    claims a start after the backup just taken (O(current)), or because their plain copy's own C(backup_label) does
    not agree with their C(backup.json) (or they hold no copy); a person must look at them. A tar copy's archives
    are not read for this (its C(backup_label) is the last member of C(base.tar)); the restore proves the copy it
    restores.
  returned: always
  type: list
  elements: str
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.pgexclusive.backup.plugins.module_utils.retention import apply_retention, retention_argument_spec
from ansible_collections.pgexclusive.backup.plugins.module_utils.module_runner import run_module


def main():
    run_module(AnsibleModule(argument_spec=retention_argument_spec(), supports_check_mode=True), apply_retention,
               needs_database=False)


if __name__ == "__main__":
    main()
