"""
The package's source files, for tests that check the code itself.
"""

from __future__ import annotations

import os
from typing import Dict

import dualproxy

#: The one module allowed to use Twisted's and pyOpenSSL's private names (see docs/architecture.md).
ADAPTER = "dualproxy.twistedcompat"

ROOT = os.path.dirname(os.path.abspath(dualproxy.__file__))


def modules() -> Dict[str, str]:
    """
    Every module of the package, by dotted name, with its file.
    """
    found = {}
    for directory, _, files in os.walk(ROOT):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(directory, name)
                dotted = "dualproxy" + path[len(ROOT):-3].replace(os.sep, ".")
                found[dotted[:-len(".__init__")] if dotted.endswith(".__init__") else dotted] = path
    return found
