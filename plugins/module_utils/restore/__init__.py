# -*- coding: utf-8 -*-
# Copyright: pgexclusive.backup maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""restore: the restore engine, as phases (driver.py runs them); the names other files import from it."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

from ansible_collections.pgexclusive.backup.plugins.module_utils.restore.choose import (  # noqa: F401
    choose_backup, latest_complete)
from ansible_collections.pgexclusive.backup.plugins.module_utils.restore.configure import (  # noqa: F401
    needs_label_fix, replace_config)
from ansible_collections.pgexclusive.backup.plugins.module_utils.restore.driver import (  # noqa: F401
    Restore, restore_argument_spec, restore_task)
from ansible_collections.pgexclusive.backup.plugins.module_utils.restore.prove import (  # noqa: F401
    check_wal_at_hand, missing_wal, wal_in_backup, wal_needed)
from ansible_collections.pgexclusive.backup.plugins.module_utils.restore.recover import (  # noqa: F401
    login_role, refused_login, socket_refused)
from ansible_collections.pgexclusive.backup.plugins.module_utils.restore.check_targets import (  # noqa: F401
    check_target_dir, tablespace_targets)
