# -*- coding: utf-8 -*-
# Copyright: pgexclusive.backup maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""The edge between AnsibleModule and the logic: BackupError becomes fail_json here."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

from ansible_collections.pgexclusive.backup.plugins.module_utils.backup_record import record_part
from ansible_collections.pgexclusive.backup.plugins.module_utils.connection import ensure_driver
from ansible_collections.pgexclusive.backup.plugins.module_utils.errors import BackupError


def run_module(module, action, needs_database=True, record_phase=None):
    """exit_json with ``action(params, check_mode)``'s result; its 'warnings' (or a failure's) become module warnings.

    Modules that only handle files (the backup directory's bookkeeping) pass
    needs_database=False: they must run where psycopg2 is missing, e.g. on a
    backup repository host. A phase of the backup passes its ``record_phase``:
    its result, or its failure's facts, then carry its part of backup.json as
    ``record_part`` (backup_record.record_part).
    """
    if needs_database:
        ensure_driver(module)
    try:
        result = action(module.params, module.check_mode)
        if record_phase:
            # Check mode does not do what would give some facts (a copy's size): its part holds None for them.
            result["record_part"] = record_part(record_phase, result, partial=module.check_mode)
    except BackupError as exc:
        if record_phase:
            exc.facts["record_part"] = record_part(record_phase, exc.facts, partial=True)
        # A failure may come with warnings too (a drill that failed and could not be added to backup.json).
        for warning in exc.facts.pop("warnings", []):
            module.warn(warning)
        module.fail_json(**exc.fail_kwargs())
    for warning in result.pop("warnings", []):
        module.warn(warning)
    module.exit_json(**result)
