# -*- coding: utf-8 -*-
# Copyright: pgexclusive.backup maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""The edge between AnsibleModule and the logic: BackupError becomes fail_json here."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

from ansible_collections.pgexclusive.backup.plugins.module_utils.connection import ensure_driver
from ansible_collections.pgexclusive.backup.plugins.module_utils.errors import BackupError


def run_module(module, action, needs_database=True):
    """exit_json with ``action(params, check_mode)``'s result; its 'warnings' (or a failure's) become module warnings.

    Modules that only handle files (the backup directory's bookkeeping) pass
    needs_database=False: they must run where psycopg2 is missing, e.g. on a
    backup repository host.
    """
    if needs_database:
        ensure_driver(module)
    try:
        result = action(module.params, module.check_mode)
    except BackupError as exc:
        # A failure may come with warnings too (a drill that failed and could not be added to backup.json).
        for warning in exc.facts.pop("warnings", []):
            module.warn(warning)
        module.fail_json(**exc.fail_kwargs())
    for warning in result.pop("warnings", []):
        module.warn(warning)
    module.exit_json(**result)
