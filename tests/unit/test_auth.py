"""
Tests for L{dualproxy.policy.auth}: password hashes, the password file and
Basic proxy authentication (RFC 7617, RFC 9110 section 11.7).
"""

from __future__ import annotations

import base64
import hashlib
import unicodedata

from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase

from dualproxy.policy import auth
from dualproxy.policy.auth import HAVE_SCRYPT, PasswordFile, ProxyAuthenticator, hashPassword
from dualproxy.http.message import Headers, Refusal

SALT = b"0123456789abcdef"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def pbkdf2(password: str, iterations: int = 1000) -> str:
    """
    A pbkdf2_sha256 hash made independently of the module, cheaply.
    """
    digest = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), SALT, iterations, 32)
    return f"pbkdf2_sha256${iterations}${b64(SALT)}${b64(digest)}"


def scrypt(password: str) -> str:
    digest = hashlib.scrypt(password.encode("utf-8"), salt=SALT, n=16, r=1, p=1, dklen=32)
    return f"scrypt$16$1$1${b64(SALT)}${b64(digest)}"


def basic(credentials: bytes, scheme: bytes = b"Basic") -> bytes:
    return scheme + b" " + base64.b64encode(credentials)


requiresScrypt = "hashlib.scrypt is missing in this Python" if not HAVE_SCRYPT else None


class HashPasswordTests(SynchronousTestCase):
    def test_pbkdf2RoundTrip(self) -> None:
        encoded = hashPassword("s3cret é", scheme="pbkdf2_sha256")
        self.assertTrue(encoded.startswith(f"pbkdf2_sha256${auth.PBKDF2_ITERATIONS}$"))
        passwords = PasswordFile.parse(f"alice:{encoded}\n".encode("utf-8"))
        self.assertTrue(passwords.check("alice", "s3cret é"))
        self.assertFalse(passwords.check("alice", "s3cret e"))

    def test_scryptRoundTrip(self) -> None:
        encoded = hashPassword("s3cret", scheme="scrypt")
        self.assertTrue(encoded.startswith(f"scrypt${2 ** 14}$8$1$"))
        passwords = PasswordFile.parse(f"alice:{encoded}\n".encode("utf-8"))
        self.assertTrue(passwords.check("alice", "s3cret"))
        self.assertFalse(passwords.check("alice", "s3cre"))

    test_scryptRoundTrip.skip = requiresScrypt  # type: ignore[attr-defined]

    def test_default(self) -> None:
        """
        The default is scrypt when this Python has it, else pbkdf2_sha256.
        """
        self.patch(auth, "PBKDF2_ITERATIONS", 1000)
        self.patch(auth, "SCRYPT_N", 16)
        expected = "scrypt$" if HAVE_SCRYPT else "pbkdf2_sha256$"
        self.assertTrue(hashPassword("x").startswith(expected))
        self.patch(auth, "HAVE_SCRYPT", False)
        self.assertTrue(hashPassword("x").startswith("pbkdf2_sha256$1000$"))
        self.assertRaises(ValueError, hashPassword, "x", scheme="scrypt")

    def test_salted(self) -> None:
        self.patch(auth, "PBKDF2_ITERATIONS", 1000)
        self.assertNotEqual(hashPassword("x", "pbkdf2_sha256"), hashPassword("x", "pbkdf2_sha256"))

    def test_unknownScheme(self) -> None:
        self.assertRaises(ValueError, hashPassword, "x", scheme="md5")

    def test_nfc(self) -> None:
        """
        Passwords compare after NFC normalization (RFC 7617 section 2.1).
        """
        composed = "\u00e9t\u00e9"
        decomposed = unicodedata.normalize("NFD", composed)
        self.assertNotEqual(composed, decomposed)
        passwords = PasswordFile.parse(f"bob:{pbkdf2(composed)}\n".encode("utf-8"))
        self.assertTrue(passwords.check("bob", decomposed))


class PasswordFileTests(SynchronousTestCase):
    def test_load(self) -> None:
        path = FilePath(self.mktemp())
        path.setContent(
            b"# proxy users\n"
            b"\n"
            + f"alice:{pbkdf2('wonderland')}\n".encode("ascii")
            + b"   # indented comment\r\n"
            + f"  bob : {pbkdf2('builder', 2000)}  \r\n".encode("ascii")
            + f"j\u00fcrgen:{pbkdf2('pw')}".encode("utf-8")
        )
        passwords = PasswordFile.load(path.path)
        self.assertEqual(len(passwords), 3)
        table = [
            ("alice", "wonderland", True),
            ("alice", "Wonderland", False),
            ("alice", "", False),
            ("bob ", "builder", True),
            ("bob", "builder", False),
            ("j\u00fcrgen", "pw", True),
            ("nobody", "wonderland", False),
            ("", "", False),
        ]
        for user, password, expected in table:
            self.assertEqual(passwords.check(user, password), expected, (user, password))

    def test_scryptLine(self) -> None:
        passwords = PasswordFile.parse(f"carol:{scrypt('pw')}\n".encode("ascii"))
        self.assertTrue(passwords.check("carol", "pw"))
        self.assertFalse(passwords.check("carol", "pW"))

    test_scryptLine.skip = requiresScrypt  # type: ignore[attr-defined]

    def test_scryptUnavailable(self) -> None:
        """
        A file with scrypt hashes is refused at load, not at the first login,
        by a Python without hashlib.scrypt.
        """
        self.patch(auth, "HAVE_SCRYPT", False)
        line = f"carol:scrypt$16$1$1${b64(SALT)}${b64(SALT)}\n".encode("ascii")
        error = self.assertRaises(ValueError, PasswordFile.parse, line)
        self.assertEqual(str(error), "line 1: scrypt hashes are not supported by this Python; use pbkdf2_sha256")

    def test_malformed(self) -> None:
        good = pbkdf2("pw")
        salt = b64(SALT)
        # (third line of the file, error message)
        table = [
            ("nocolon", "line 3: expected user:hash"),
            (":" + good, "line 3: empty user name"),
            ("alice:" + good, "line 3: duplicate user 'alice'"),
            ("bob:", "line 3: unknown hash scheme (expected scrypt$... or pbkdf2_sha256$...)"),
            ("bob:plaintext", "line 3: unknown hash scheme (expected scrypt$... or pbkdf2_sha256$...)"),
            ("bob:md5$1$2$3", "line 3: unknown hash scheme (expected scrypt$... or pbkdf2_sha256$...)"),
            ("bob:pbkdf2_sha256$1000$" + salt, "line 3: expected pbkdf2_sha256$iterations$salt$hash"),
            ("bob:pbkdf2_sha256$0$" + salt + "$" + salt, "line 3: pbkdf2_sha256 iterations '0' is not a positive integer"),
            ("bob:pbkdf2_sha256$x$" + salt + "$" + salt, "line 3: pbkdf2_sha256 iterations 'x' is not a positive integer"),
            ("bob:pbkdf2_sha256$-5$" + salt + "$" + salt, "line 3: pbkdf2_sha256 iterations '-5' is not a positive integer"),
            ("bob:pbkdf2_sha256$1000$!!!$" + salt, "line 3: salt or hash is not base64"),
            ("bob:pbkdf2_sha256$1000$" + salt + "$", "line 3: empty salt or hash"),
            ("bob:scrypt$16$1$" + salt + "$" + salt, "line 3: expected scrypt$n$r$p$salt$hash"),
            ("bob:scrypt$15$1$1$" + salt + "$" + salt, "line 3: scrypt n 15 is not a power of 2"),
            ("bob:scrypt$1$1$1$" + salt + "$" + salt, "line 3: scrypt n 1 is not a power of 2"),
            ("bob:scrypt$16$0$1$" + salt + "$" + salt, "line 3: scrypt r '0' is not a positive integer"),
            ("bob:scrypt$16$1$p$" + salt + "$" + salt, "line 3: scrypt p 'p' is not a positive integer"),
            (f"bob:scrypt${2 ** 24}$8$1$" + salt + "$" + salt, "line 3: scrypt parameters need more than 1 GiB of memory"),
        ]
        for line, message in table:
            data = f"# users\nalice:{good}\n{line}\n".encode("utf-8")
            error = self.assertRaises(ValueError, PasswordFile.parse, data)
            self.assertEqual(str(error), message, line)

    def test_notUTF8(self) -> None:
        error = self.assertRaises(ValueError, PasswordFile.parse, b"\n\xff:x\n")
        self.assertEqual(str(error), "line 2: not UTF-8")

    def test_loadMalformed(self) -> None:
        path = FilePath(self.mktemp())
        path.setContent(b"alice\n")
        error = self.assertRaises(ValueError, PasswordFile.load, path.path)
        self.assertEqual(str(error), "line 1: expected user:hash")

    def test_missingFile(self) -> None:
        self.assertRaises(OSError, PasswordFile.load, self.mktemp())

    def test_empty(self) -> None:
        passwords = PasswordFile.parse(b"# nobody yet\n")
        self.assertEqual(len(passwords), 0)
        self.patch(auth, "PBKDF2_ITERATIONS", 1000)
        self.patch(auth, "SCRYPT_N", 16)
        self.assertFalse(passwords.check("alice", ""))


CHALLENGE = (b"Proxy-Authenticate", b'Basic realm="proxy land", charset="UTF-8"')


class ProxyAuthenticatorTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.patch(auth, "PBKDF2_ITERATIONS", 1000)
        self.patch(auth, "SCRYPT_N", 16)
        umlauts = pbkdf2("p\u00e4ss:w\u00f6rd")
        self.passwords = PasswordFile.parse(
            f"alice:{pbkdf2('wonderland')}\nj\u00fcrgen:{umlauts}\n".encode("utf-8")
        )
        self.authenticator = ProxyAuthenticator(self.passwords, "proxy land")

    def assertRefused(self, headers: Headers, message: object) -> None:
        refusal = self.assertRaises(Refusal, self.authenticator.authenticate, headers)
        self.assertEqual(refusal.status, 407, message)
        self.assertEqual(refusal.reason, "proxy authentication required", message)
        self.assertEqual(refusal.headers, (CHALLENGE,), message)

    def test_accepted(self) -> None:
        table = [
            (basic(b"alice:wonderland"), "alice"),
            (basic(b"alice:wonderland", b"basic"), "alice"),  # RFC 9110 section 11.1: scheme is case-insensitive
            (basic(b"alice:wonderland", b"BASIC"), "alice"),
            (b"Basic   " + base64.b64encode(b"alice:wonderland") + b" ", "alice"),
            (basic("j\u00fcrgen:p\u00e4ss:w\u00f6rd".encode("utf-8")), "j\u00fcrgen"),  # RFC 7617 section 2: password may hold ':'
        ]
        for value, user in table:
            headers = Headers([(b"Host", b"example.com"), (b"proxy-authorization", value)])
            self.assertEqual(self.authenticator.authenticate(headers), user, value)

    def test_refused(self) -> None:
        """
        Every missing, malformed or wrong credential gets the same 407 and
        challenge (RFC 9110 section 11.7.1).
        """
        table = [
            [],
            [(b"Authorization", basic(b"alice:wonderland"))],  # for the origin, not the proxy
            [(b"Proxy-Authorization", b"")],
            [(b"Proxy-Authorization", b"Basic")],
            [(b"Proxy-Authorization", b"Basic ")],
            [(b"Proxy-Authorization", basic(b"alice:wonderland", b"Bearer"))],
            [(b"Proxy-Authorization", basic(b"alice:wonderland", b"Digest"))],
            [(b"Proxy-Authorization", b"Basic !!!notbase64")],
            [(b"Proxy-Authorization", b"Basic " + base64.b64encode(b"alice:wonderland")[:-2])],
            [(b"Proxy-Authorization", basic(b"alicewonderland"))],  # no colon
            [(b"Proxy-Authorization", basic(b"alice:Wonderland"))],
            [(b"Proxy-Authorization", basic(b"alice:"))],
            [(b"Proxy-Authorization", basic(b":wonderland"))],
            [(b"Proxy-Authorization", basic(b"bob:wonderland"))],
            [(b"Proxy-Authorization", basic(b"ALICE:wonderland"))],
            [(b"Proxy-Authorization", basic(b"\xffalice:wonderland"))],  # not UTF-8
            [(b"Proxy-Authorization", basic(b"alice:wonderland")), (b"Proxy-Authorization", basic(b"alice:wonderland"))],
        ]
        for fields in table:
            self.assertRefused(Headers(fields), fields)

    def test_realmQuoted(self) -> None:
        authenticator = ProxyAuthenticator(self.passwords, 'a "b" \\c')
        refusal = self.assertRaises(Refusal, authenticator.authenticate, Headers())
        self.assertEqual(
            refusal.headers, ((b"Proxy-Authenticate", b'Basic realm="a \\"b\\" \\\\c", charset="UTF-8"'),)
        )

    def countChecks(self) -> list:
        calls = []
        check = self.passwords.check

        def counting(user: str, password: str) -> bool:
            calls.append((user, password))
            return check(user, password)

        self.patch(self.passwords, "check", counting)
        return calls

    def test_cacheHit(self) -> None:
        """
        A header value already verified is not hashed again.
        """
        calls = self.countChecks()
        headers = Headers([(b"Proxy-Authorization", basic(b"alice:wonderland"))])
        for _ in range(5):
            self.assertEqual(self.authenticator.authenticate(headers), "alice")
        self.assertEqual(calls, [("alice", "wonderland")])

    def test_failureNotCached(self) -> None:
        """
        Wrong credentials are verified, and refused, every time; a cached
        success does not vouch for another value.
        """
        calls = self.countChecks()
        good = Headers([(b"Proxy-Authorization", basic(b"alice:wonderland"))])
        bad = Headers([(b"Proxy-Authorization", basic(b"alice:wonderlan"))])
        self.authenticator.authenticate(good)
        for _ in range(3):
            self.assertRefused(bad, "bad")
        self.assertEqual(len(calls), 4)
        self.assertEqual(self.authenticator.authenticate(good), "alice")
        self.assertEqual(len(calls), 4)

    def test_cacheBounded(self) -> None:
        self.patch(auth, "_CACHE_SIZE", 3)
        calls = self.countChecks()
        values = [basic(b"alice:wonderland", scheme) for scheme in (b"Basic", b"basic", b"BASIC", b"bAsIc")]
        for value in values:
            self.authenticator.authenticate(Headers([(b"Proxy-Authorization", value)]))
        self.assertEqual(len(calls), 4)
        self.assertEqual(list(self.authenticator._verified), values[1:])
        self.authenticator.authenticate(Headers([(b"Proxy-Authorization", values[0])]))
        self.assertEqual(len(calls), 5)
