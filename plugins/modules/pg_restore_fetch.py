#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: pgexclusive.backup maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function
__metaclass__ = type

DOCUMENTATION = r'''
---
module: pg_restore_fetch
short_description: Stage a backup from a repository host on the host that restores it
description:
  - Runs on the target host of a restore and pulls one backup of this collection from a repository on another host
    (O(repository), C([user@]host:/path), as C(exclusive_backup_repository) writes it) with rsync over ssh, as the
    user it runs as (root, with C(become)), with O(ssh_user), O(ssh_key) and O(ssh_options).
  - O(repository) names a backup directory (it holds C(backup.json)) or a destination. Only the C(backup.json) files
    there are read first; the choice is M(pgexclusive.backup.pg_backup_restore)'s own, on the target host - the newest
    C(complete) backup of the cluster O(system_identifier) under a destination, and a backup that is not complete
    is refused unless O(allow_incomplete).
  - The backup goes into C(<fetch_dir>/<label>/), its C(backup.json) last. A staged copy of the same backup left by
    an earlier fetch is brought up to date and reused; anything else at that path is refused.
  - Refuses a O(fetch_dir) that is, holds or lies in the data directory, O(waldir) or a tablespace's new directory.
  - Returns C(created), what the fetch created (the fetch directory, or the backup's directory in it); remove that,
    and only that, once the restore is done. Nothing is ever written on the repository host.
version_added: 0.2.0
author: pgexclusive.backup maintainers (@pgexclusive)
requirements:
  - rsync and the OpenSSH client on the target host, sshd and rsync on the repository host
options:
  repository:
    description: The backup directory or destination on the repository host, C([user@]host:/absolute/path).
    type: str
    required: true
  ssh_user:
    description: The login on the repository host; default the user in O(repository), else ssh's default.
    type: str
  ssh_key:
    description: Private key file on the target host for the repository (C(ssh -i), C(IdentitiesOnly)).
    type: path
  ssh_options:
    description:
      - More ssh arguments, one per item; they win over C(BatchMode=yes), C(ConnectTimeout=30),
        C(ServerAliveInterval=15) and C(ServerAliveCountMax=4).
    type: list
    elements: str
    default: []
  fetch_dir:
    description: Where the backup is staged on the target host; default C(<data_directory>.fetch).
    type: path
  data_directory:
    description: The restore's target data directory (the staged copy must lie outside it).
    type: path
    required: true
  waldir:
    description: The restore's C(waldir), if any (the staged copy must lie outside it).
    type: path
  tablespace_mapping:
    description: The restore's new tablespace paths (the staged copy must lie outside them).
    type: dict
    default: {}
  system_identifier:
    description: The cluster whose backup to fetch; needed when the destination holds backups of several.
    type: str
  allow_incomplete:
    description: Fetch a backup whose C(backup.json) is not C(complete) (to salvage data only).
    type: bool
    default: false
notes:
  - Check mode reads the records and chooses the backup, and stages nothing.
'''

EXAMPLES = r'''
- name: Stage the newest complete backup of the cluster from the repository host
  pgexclusive.backup.pg_restore_fetch:
    repository: pgbackup@repo1.example.com:/srv/pgbackups
    ssh_key: /root/.ssh/pgbackup_ed25519
    ssh_options: [-o, UserKnownHostsFile=/etc/pgexclusive/known_hosts, -o, StrictHostKeyChecking=yes]
    system_identifier: "7441234567890123456"
    data_directory: /var/lib/postgresql/16/main
  register: staged
'''

RETURN = r'''
backup_dir:
  description: The staged backup, C(<fetch_dir>/<label>); give it to M(pgexclusive.backup.pg_backup_restore).
  returned: success, and on a failure after the backup was chosen
  type: str
label:
  description: The backup's label (its directory's name).
  returned: success
  type: str
repository:
  description: The chosen backup on the repository host, C([user@]host:/path/<label>).
  returned: success
  type: str
fetch_dir:
  description: The fetch directory.
  returned: success
  type: str
system_identifier:
  description: The cluster the backup is of.
  returned: success
  type: str
created:
  description: What the fetch created (the fetch directory, or the backup's directory in it); empty when it reused one.
  returned: success, and on a failure after the backup was chosen
  type: list
  elements: str
reused:
  description: Whether a staged copy of the same backup was already there and brought up to date.
  returned: success
  type: bool
commands:
  description: The rsync commands run and their exit codes.
  returned: success, and when an rsync failed
  type: list
  elements: dict
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.pgexclusive.backup.plugins.module_utils.module_runner import run_module
from ansible_collections.pgexclusive.backup.plugins.module_utils.restore.fetch import fetch_argument_spec, fetch_task


def main():
    run_module(AnsibleModule(argument_spec=fetch_argument_spec(), supports_check_mode=True), fetch_task,
               needs_database=False)


if __name__ == "__main__":
    main()
