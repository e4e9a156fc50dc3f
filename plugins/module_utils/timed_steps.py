# -*- coding: utf-8 -*-
# Copyright: pgexclusive.backup maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Steps run one after another, each timed on the monotonic clock (a clock set meanwhile changes no duration)."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import time


class TimedSteps(object):
    """The steps run so far: ``durations`` (step -> seconds, also of one that failed) and ``current``, the last begun."""

    def __init__(self, durations=None):
        self.durations = {} if durations is None else durations
        self.current = None

    def run(self, name, call, *args):
        self.current = name
        began = time.monotonic()
        try:
            return call(*args)
        finally:
            self.durations[name] = round(time.monotonic() - began, 3)
