# -*- coding: utf-8 -*-
# Copyright: pgexclusive.backup maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function
__metaclass__ = type


class ModuleDocFragment(object):
    # state_dir, for every module that reads or writes the state records. The default must equal
    # safety_stop/records.py's DEFAULT_STATE_DIR, which the argument specs use (tests/unit/plugins/test_doc_fragments.py).
    DOCUMENTATION = r'''
options:
  state_dir:
    description:
      - Directory on the host the module runs on for the state records of M(pgexclusive.backup.pg_start_backup),
        one per cluster and label (who started the backup, when, the lease, the outcome). Created with mode C(0700).
      - Every module of one backup must be given the same value, on the same host.
      - Never inside the data directory (it would be copied). The default needs root (C(become) true).
    type: path
    default: /var/lib/pgexclusive-backup
'''
