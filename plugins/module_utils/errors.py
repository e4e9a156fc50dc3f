# -*- coding: utf-8 -*-
# Copyright: pgexclusive.backup maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function
__metaclass__ = type


class BackupError(Exception):
    """What went wrong and what to do about it; modules turn it into fail_json."""

    def __init__(self, msg, hint=None, **facts):
        super(BackupError, self).__init__(msg)
        self.msg = msg
        self.hint = hint
        self.facts = facts

    def __str__(self):
        return "%s %s" % (self.msg, self.hint) if self.hint else self.msg

    def fail_kwargs(self):
        kwargs = dict(self.facts)
        kwargs["msg"] = str(self)
        if self.hint:
            kwargs["hint"] = self.hint
        return kwargs
