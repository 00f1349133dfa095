"""
C{dualproxy-passwd FILE USER}: add or replace a user in a proxy password
file.

The password is asked twice on a terminal, or read as one line from
standard input otherwise, for scripts.  The file is rewritten atomically, so
a proxy loading it never sees half of it.
"""

from __future__ import annotations

import getpass
import os
import sys
import unicodedata
from typing import List, Optional, Tuple

from ..files import replaceFile
from .auth import hashPassword

USAGE = "usage: dualproxy-passwd FILE USER"
_PROGRAM = "dualproxy-passwd"


class _Failure(Exception):
    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code


def _checkUser(user: str) -> None:
    """
    Refuse names that Basic authentication cannot carry (a colon, RFC 7617
    section 2) or that the file format would misread.
    """
    if not user:
        raise _Failure("user name must not be empty", 2)
    if ":" in user:
        raise _Failure(f"user name {user!r} must not contain ':'", 2)
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in user):
        raise _Failure(f"user name {user!r} must not contain control characters", 2)
    if user != user.strip() or user.startswith("#"):
        raise _Failure(f"user name {user!r} must not start with '#' or start or end with spaces", 2)


def _readPassword() -> str:
    if sys.stdin.isatty():
        try:
            password = getpass.getpass("Password: ")
            again = getpass.getpass("Retype password: ")
        except EOFError:
            raise _Failure("no password given", 2)
        if again != password:
            raise _Failure("passwords do not match", 2)
    else:
        line = sys.stdin.readline()
        if not line:
            raise _Failure("no password on standard input", 2)
        password = line[:-1] if line.endswith("\n") else line
        if password.endswith("\r"):
            password = password[:-1]
    if not password:
        raise _Failure("password must not be empty", 2)
    return password


def _userOf(line: bytes) -> Optional[str]:
    text = line.decode("utf-8", "replace").strip()
    if not text or text.startswith("#") or ":" not in text:
        return None
    return unicodedata.normalize("NFC", text.partition(":")[0])


def _replaced(lines: List[bytes], user: str, entry: bytes) -> Tuple[List[bytes], bool]:
    """
    C{lines} with C{user}'s line replaced by C{entry}, or C{entry} appended,
    and whether it was replaced; comments and other users are kept as they
    were.
    """
    out = []
    found = False
    for line in lines:
        if _userOf(line) == user:
            if not found:
                out.append(entry)
            found = True
        else:
            out.append(line if line.endswith(b"\n") else line + b"\n")
    if not found:
        out.append(entry)
    return out, found


def _write(path: str, data: bytes) -> None:
    """
    Replace C{path} with C{data} atomically, keeping an existing file's
    permissions (new files are private to the owner: mode 0600), and its
    owner and group when run as root (sudo), or the proxy user could no
    longer read its own password file.
    """
    path = os.path.realpath(path)
    try:
        existing = os.stat(path)
    except FileNotFoundError:
        replaceFile(path, data)
        return
    root = hasattr(os, "geteuid") and os.geteuid() == 0
    replaceFile(path, data, existing.st_mode & 0o7777, (existing.st_uid, existing.st_gid) if root else None)


def _run(arguments: List[str]) -> str:
    if len(arguments) != 2 or arguments[0].startswith("-"):
        raise _Failure(USAGE, 2)
    path, user = arguments[0], unicodedata.normalize("NFC", arguments[1])
    _checkUser(user)
    try:
        with open(path, "rb") as f:
            lines = f.read().splitlines(keepends=True)
    except FileNotFoundError:
        lines = []
    except OSError as e:
        raise _Failure(f"{path}: {e.strerror}", 1)
    password = _readPassword()
    entry = f"{user}:{hashPassword(password)}\n".encode("utf-8")
    updated, found = _replaced(lines, user, entry)
    try:
        _write(path, b"".join(updated))
    except OSError as e:
        raise _Failure(f"{path}: {e.strerror}", 1)
    return f"{'Updated' if found else 'Added'} user {user} in {path}"


def main(argv: Optional[List[str]] = None) -> int:
    """
    Run the command; 0 on success, 2 for a usage error, 1 if the file could
    not be read or written.  Errors are one line on standard error.
    """
    arguments = sys.argv[1:] if argv is None else list(argv)
    if arguments in (["-h"], ["--help"]):
        print(USAGE)
        return 0
    try:
        message = _run(arguments)
    except _Failure as e:
        print(f"{_PROGRAM}: {e}", file=sys.stderr)
        return e.code
    print(message)
    return 0


if __name__ == "__main__":
    sys.exit(main())
