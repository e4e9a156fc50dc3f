# -*- coding: utf-8 -*-
# Copyright: pgexclusive.backup maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""copy: the filesystem copy of an exclusive backup (pg_backup_copy).

- backup_copy.py: pg_backup_copy's options and the Copier that runs a copy;
- methods.py: tar, rsync, copy and the user's command, one class each;
- io.py: the roots a copy reads, trees copied without following links, gzip in threads.

What a copy leaves out is backup_files.py's, shared with the restore. This
__init__ imports nothing: io.py is shared with repository.py, which the
methods import, and the module imports backup_copy.py by its name.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type
