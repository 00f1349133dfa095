"""
Table-driven tests: one test method per case, named after the rule it checks.
"""

from __future__ import annotations

import re


def _slug(rule):
    return re.sub(r"[^0-9a-z]+", "_", rule.lower().replace("\u00a7", "s")).strip("_")


def fromTable(cases, checker):
    """
    Class decorator adding one test per case, named and documented by the
    rule in its first element, that calls C{self.<checker>(*case[1:])}.
    """

    def decorate(cls):
        for case in cases:
            name = "test_" + _slug(case[0])
            if hasattr(cls, name):
                raise ValueError(f"two cases for one rule: {case[0]!r}")

            def test(self, case=case):
                return getattr(self, checker)(*case[1:])

            test.__name__ = name
            test.__doc__ = case[0]
            setattr(cls, name, test)
        return cls

    return decorate
