# -*- coding: utf-8 -*-
# Copyright: pgexclusive.backup maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function
__metaclass__ = type


# ansible-test's yamllint reads each fragment as one string literal, so the suboptions of a
# check (restore/verify_restore.py's check_options()) are written out in both variables;
# tests/unit/plugins/test_doc_fragments.py keeps the two copies identical and true to the code.
class ModuleDocFragment(object):
    DOCUMENTATION = r'''
options:
  checks:
    description:
      - SQL checks run on the restored server once it is promoted, each in its own connection, as O(login_user).
      - A failing check fails the drill, naming the check, its SQL, and what it returned against what was expected
        (or the SQL error). Every check runs, and all results are returned and kept in C(backup.json).
    version_added: 0.2.0
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description: The check's name, in the result and the history; not empty, and unique among the checks.
        type: str
        required: true
      sql:
        description: One query, not empty.
        type: str
        required: true
      expect:
        description:
          - The first column of the first row, compared as text (booleans as C(true)/C(false); cast in SQL
            for other formats).
          - Without it the check passes when the query returns a row; a query that returns no row fails either way.
        type: raw
      db:
        description: The database to run it in.
        type: str
        default: postgres
'''

    FINALIZE = r'''
options:
  verify_restore_checks:
    description:
      - SQL checks run on the restored copy once it is promoted, as M(pgexclusive.backup.pg_verify_restore)'s
        O(pgexclusive.backup.pg_verify_restore#module:checks) takes them. A failing check fails the restore check,
        so the backup is recorded C(failed).
      - The drill's result starts the C(checks) history in C(backup.json).
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description: The check's name, in the result and the history; not empty, and unique among the checks.
        type: str
        required: true
      sql:
        description: One query, not empty.
        type: str
        required: true
      expect:
        description:
          - The first column of the first row, compared as text (booleans as C(true)/C(false); cast in SQL
            for other formats).
          - Without it the check passes when the query returns a row; a query that returns no row fails either way.
        type: raw
      db:
        description: The database to run it in.
        type: str
        default: postgres
'''
