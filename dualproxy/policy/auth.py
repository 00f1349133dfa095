"""
Basic proxy authentication (RFC 7617, RFC 9110 section 11.7) against a
password file of salted, deliberately slow hashes.

File format: one C{user:hash} per line; blank lines and lines starting with
C{#} are ignored.  Hashes are C{scrypt$n$r$p$salt$hash} or
C{pbkdf2_sha256$iterations$salt$hash}, with standard base64 salts and hashes;
C{dualproxy-passwd} writes them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import unicodedata
from typing import Callable, Dict, Optional, Tuple

from ..http.message import Headers, Refusal

SCRYPT_N = 2 ** 14
SCRYPT_R = 8
SCRYPT_P = 1
PBKDF2_ITERATIONS = 600000
_SALT_BYTES = 16
_HASH_BYTES = 32
_CACHE_SIZE = 1024

# Refuse scrypt parameters whose memory (128 * r * (n + p + 2) bytes) could
# take the host down on the first login attempt.
_SCRYPT_MAX_MEMORY = 1024 ** 3

# PyPy and some OpenSSL-less builds have no hashlib.scrypt.
HAVE_SCRYPT = hasattr(hashlib, "scrypt")


def _normalize(text: str) -> bytes:
    """
    NFC, the normalization RFC 7617 section 2.1 implies for charset="UTF-8",
    so a password typed as decomposed characters still matches.
    """
    return unicodedata.normalize("NFC", text).encode("utf-8")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"), validate=True)


def _scrypt(password: bytes, salt: bytes, n: int, r: int, p: int, length: int) -> bytes:
    return hashlib.scrypt(
        password, salt=salt, n=n, r=r, p=p, dklen=length,
        maxmem=128 * r * (n + p + 2) + 1024 * 1024,
    )


def hashPassword(password: str, scheme: Optional[str] = None) -> str:
    """
    A new salted hash of C{password} for the password file.

    C{scheme} is C{"scrypt"} or C{"pbkdf2_sha256"}; by default scrypt (which
    resists GPU guessing better) when this Python has it.
    """
    if scheme is None:
        scheme = "scrypt" if HAVE_SCRYPT else "pbkdf2_sha256"
    secret = _normalize(password)
    salt = os.urandom(_SALT_BYTES)
    if scheme == "scrypt":
        if not HAVE_SCRYPT:
            raise ValueError("scrypt is not available in this Python (no hashlib.scrypt)")
        digest = _scrypt(secret, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P, _HASH_BYTES)
        return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(digest)}"
    if scheme == "pbkdf2_sha256":
        digest = hashlib.pbkdf2_hmac("sha256", secret, salt, PBKDF2_ITERATIONS, _HASH_BYTES)
        return f"pbkdf2_sha256${PBKDF2_ITERATIONS}${_b64(salt)}${_b64(digest)}"
    raise ValueError(f"unknown hash scheme {scheme!r}")


def _positive(text: str, what: str) -> int:
    if not text.isdigit() or not text.isascii() or int(text) < 1:
        raise ValueError(f"{what} {text!r} is not a positive integer")
    return int(text)


def _saltAndHash(salt: str, digest: str) -> Tuple[bytes, bytes]:
    try:
        decoded = _unb64(salt), _unb64(digest)
    except (binascii.Error, ValueError):
        raise ValueError("salt or hash is not base64")
    if not all(decoded):
        raise ValueError("empty salt or hash")
    return decoded


def _verifier(encoded: str) -> Callable[[bytes], bool]:
    """
    Parse C{encoded} once into a function checking a password against it.

    Raises L{ValueError} saying what is wrong, so the file is refused at
    start-up rather than at the first login.
    """
    scheme, _, rest = encoded.partition("$")
    parts = rest.split("$")
    if scheme == "scrypt":
        if len(parts) != 5:
            raise ValueError("expected scrypt$n$r$p$salt$hash")
        n = _positive(parts[0], "scrypt n")
        r = _positive(parts[1], "scrypt r")
        p = _positive(parts[2], "scrypt p")
        if n < 2 or n & (n - 1):
            raise ValueError(f"scrypt n {n} is not a power of 2")
        if 128 * r * (n + p + 2) > _SCRYPT_MAX_MEMORY:
            raise ValueError("scrypt parameters need more than 1 GiB of memory")
        salt, digest = _saltAndHash(parts[3], parts[4])
        if not HAVE_SCRYPT:
            raise ValueError("scrypt hashes are not supported by this Python; use pbkdf2_sha256")
        return lambda password: hmac.compare_digest(_scrypt(password, salt, n, r, p, len(digest)), digest)
    if scheme == "pbkdf2_sha256":
        if len(parts) != 3:
            raise ValueError("expected pbkdf2_sha256$iterations$salt$hash")
        iterations = _positive(parts[0], "pbkdf2_sha256 iterations")
        salt, digest = _saltAndHash(parts[1], parts[2])
        return lambda password: hmac.compare_digest(
            hashlib.pbkdf2_hmac("sha256", password, salt, iterations, len(digest)), digest
        )
    raise ValueError("unknown hash scheme (expected scrypt$... or pbkdf2_sha256$...)")


class PasswordFile:
    """
    The users and password hashes of a password file, parsed and validated.
    """

    def __init__(self, verifiers: Dict[str, Callable[[bytes], bool]]):
        self._verifiers = verifiers
        self._decoy: Optional[Callable[[bytes], bool]] = None

    @classmethod
    def load(cls, path: str) -> PasswordFile:
        """
        Read C{path}; a malformed line raises C{ValueError("line N: ...")}.
        """
        with open(path, "rb") as f:
            data = f.read()
        return cls.parse(data)

    @classmethod
    def parse(cls, data: bytes) -> PasswordFile:
        verifiers: Dict[str, Callable[[bytes], bool]] = {}
        for number, raw in enumerate(data.splitlines(), 1):
            try:
                line = raw.decode("utf-8").strip()
            except UnicodeDecodeError:
                raise ValueError(f"line {number}: not UTF-8")
            if not line or line.startswith("#"):
                continue
            user, colon, encoded = line.partition(":")
            if not colon:
                raise ValueError(f"line {number}: expected user:hash")
            user = unicodedata.normalize("NFC", user)
            if not user:
                raise ValueError(f"line {number}: empty user name")
            if user in verifiers:
                raise ValueError(f"line {number}: duplicate user {user!r}")
            try:
                verifiers[user] = _verifier(encoded.strip())
            except ValueError as e:
                raise ValueError(f"line {number}: {e}")
        return cls(verifiers)

    def __len__(self) -> int:
        return len(self._verifiers)

    def __contains__(self, user: str) -> bool:
        return unicodedata.normalize("NFC", user) in self._verifiers

    def check(self, user: str, password: str) -> bool:
        """
        Whether C{password} is C{user}'s.  Slow by design.
        """
        verify = self._verifiers.get(unicodedata.normalize("NFC", user))
        if verify is None:
            # Unknown users pay for a hash too, so timing does not tell
            # which user names exist.
            if self._decoy is None:
                self._decoy = _verifier(hashPassword(""))
            self._decoy(_normalize(password))
            return False
        return verify(_normalize(password))


def _quote(text: str) -> bytes:
    return b'"' + text.replace("\\", "\\\\").replace('"', '\\"').encode("utf-8") + b'"'


class ProxyAuthenticator:
    """
    Checks the Proxy-Authorization of each request.

    Verifying a hash costs tens of milliseconds on purpose, and clients send
    the same header on every request, so verified header values are
    remembered (a bounded number, oldest forgotten first).  Only successes
    are remembered: a failure is never cached as anything.
    """

    def __init__(self, passwords: PasswordFile, realm: str):
        self.passwords = passwords
        self.realm = realm
        self._challenge = (
            (b"Proxy-Authenticate", b"Basic realm=" + _quote(realm) + b', charset="UTF-8"'),
        )
        self._verified: Dict[bytes, str] = {}

    def _refuse(self) -> Refusal:
        return Refusal(407, "proxy authentication required", headers=self._challenge)

    def authenticate(self, headers: Headers) -> str:
        """
        The authenticated user name, or raise a 407 L{Refusal} challenging
        the client (RFC 9110 section 11.7.1).
        """
        values = headers.getAll(b"proxy-authorization")
        if len(values) != 1:
            raise self._refuse()
        value = values[0]
        user = self._verified.get(value)
        if user is not None:
            return user
        credentials = self._decode(value)
        if credentials is None:
            raise self._refuse()
        user, password = credentials
        if not self.passwords.check(user, password):
            raise self._refuse()
        if len(self._verified) >= _CACHE_SIZE:
            del self._verified[next(iter(self._verified))]
        self._verified[value] = user
        return user

    @staticmethod
    def _decode(value: bytes) -> Optional[Tuple[str, str]]:
        """
        The (user, password) of a Basic credential (RFC 7617 section 2), or
        C{None} for anything else.
        """
        scheme, _, token = value.strip().partition(b" ")
        if scheme.lower() != b"basic":
            return None
        try:
            text = base64.b64decode(token.strip(b" \t"), validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            return None
        user, colon, password = text.partition(":")
        if not colon:
            return None
        return user, password
