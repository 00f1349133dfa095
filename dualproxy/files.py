"""
Replacing a file atomically, for what the proxy and its commands write
(ACME keys and certificates, password files): a reader sees the old file
or the new one, never half of it, and a crash leaves one of the two.
"""

from __future__ import annotations

import os
import tempfile
from typing import Optional, Tuple


def replaceFile(path: str, data: bytes, mode: int = 0o600, owner: Optional[Tuple[int, int]] = None) -> None:
    """
    Replace C{path} with C{data}: written beside it to a temporary file
    that has C{mode} (and C{owner}, a uid and gid, if given) before any
    byte, flushed to disk, then renamed over it.  A key is never readable
    by others, even briefly.
    """
    directory, name = os.path.split(path)
    fd, temporary = tempfile.mkstemp(dir=directory, prefix="." + name + ".")
    try:
        if owner is not None:
            # Before the mode: changing the owner may clear set-id bits.
            os.fchown(fd, *owner)
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise
