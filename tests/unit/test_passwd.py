"""
Tests for L{dualproxy.policy.passwd}, the C{dualproxy-passwd} command.
"""

from __future__ import annotations

import io
import os
import stat
import sys

from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase

from dualproxy.policy import auth, passwd
from dualproxy.policy.auth import PasswordFile


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class PasswdTests(SynchronousTestCase):
    def setUp(self) -> None:
        # Cheap hashes: the format, not the cost, is under test.
        self.patch(auth, "PBKDF2_ITERATIONS", 1000)
        self.patch(auth, "SCRYPT_N", 16)
        self.stdout = io.StringIO()
        self.stderr = io.StringIO()
        self.patch(sys, "stdout", self.stdout)
        self.patch(sys, "stderr", self.stderr)
        self.path = FilePath(self.mktemp())

    def invoke(self, argv, stdin: str = "") -> int:
        self.patch(sys, "stdin", io.StringIO(stdin))
        return passwd.main(argv)

    def test_create(self) -> None:
        """
        A missing file is created private to its owner (mode 0600), with the
        password from a non-terminal stdin.
        """
        self.assertEqual(self.invoke([self.path.path, "alice"], "wonder land\n"), 0)
        self.assertEqual(self.stdout.getvalue(), f"Added user alice in {self.path.path}\n")
        self.assertEqual(self.stderr.getvalue(), "")
        self.assertEqual(stat.S_IMODE(os.stat(self.path.path).st_mode), 0o600)
        passwords = PasswordFile.load(self.path.path)
        self.assertEqual(len(passwords), 1)
        self.assertTrue(passwords.check("alice", "wonder land"))
        self.assertFalse(passwords.check("alice", "wonder land\n"))

    def test_stdinEndings(self) -> None:
        table = [("pw\n", "pw"), ("pw\r\n", "pw"), ("pw", "pw"), (" pw \n", " pw "), ("pw\nignored\n", "pw")]
        for stdin, password in table:
            self.assertEqual(self.invoke([self.path.path, "alice"], stdin), 0)
            self.assertTrue(PasswordFile.load(self.path.path).check("alice", password), stdin)

    def test_replace(self) -> None:
        """
        An existing user's line is replaced in place; comments, other users
        and the file's mode are kept.
        """
        self.assertEqual(self.invoke([self.path.path, "alice"], "one\n"), 0)
        self.assertEqual(self.invoke([self.path.path, "bob"], "two\n"), 0)
        content = b"# proxy users\n\n" + self.path.getContent()
        self.path.setContent(content)
        os.chmod(self.path.path, 0o640)
        self.assertEqual(self.invoke([self.path.path, "alice"], "three\n"), 0)
        self.assertIn(f"Updated user alice in {self.path.path}\n", self.stdout.getvalue())
        lines = self.path.getContent().splitlines()
        self.assertEqual(lines[:2], [b"# proxy users", b""])
        self.assertTrue(lines[2].startswith(b"alice:"))
        self.assertEqual(lines[3], content.splitlines()[3])
        self.assertEqual(len(lines), 4)
        self.assertEqual(stat.S_IMODE(os.stat(self.path.path).st_mode), 0o640)
        passwords = PasswordFile.load(self.path.path)
        self.assertTrue(passwords.check("alice", "three"))
        self.assertFalse(passwords.check("alice", "one"))
        self.assertTrue(passwords.check("bob", "two"))

    def test_appendWithoutFinalNewline(self) -> None:
        self.invoke([self.path.path, "alice"], "one\n")
        self.path.setContent(self.path.getContent().rstrip(b"\n"))
        self.assertEqual(self.invoke([self.path.path, "bob"], "two\n"), 0)
        passwords = PasswordFile.load(self.path.path)
        self.assertTrue(passwords.check("alice", "one"))
        self.assertTrue(passwords.check("bob", "two"))

    def test_noTemporaryLeft(self) -> None:
        self.invoke([self.path.path, "alice"], "one\n")
        self.invoke([self.path.path, "alice"], "two\n")
        self.assertEqual(os.listdir(self.path.dirname()), [self.path.basename()])

    def test_symlink(self) -> None:
        """
        A symbolic link is followed: its target is updated, the link kept.
        """
        target = FilePath(self.mktemp())
        os.symlink(target.path, self.path.path)
        self.assertEqual(self.invoke([self.path.path, "alice"], "pw\n"), 0)
        self.assertTrue(os.path.islink(self.path.path))
        self.assertTrue(PasswordFile.load(target.path).check("alice", "pw"))

    def test_terminal(self) -> None:
        """
        On a terminal the password is asked twice with getpass.
        """
        prompts = []
        answers = iter(["secret", "secret"])

        def getpass(prompt: str) -> str:
            prompts.append(prompt)
            return next(answers)

        self.patch(sys, "stdin", FakeTerminal())
        self.patch(passwd.getpass, "getpass", getpass)
        self.assertEqual(passwd.main([self.path.path, "alice"]), 0)
        self.assertEqual(prompts, ["Password: ", "Retype password: "])
        self.assertTrue(PasswordFile.load(self.path.path).check("alice", "secret"))

    def test_terminalMismatch(self) -> None:
        answers = iter(["secret", "secreT"])
        self.patch(sys, "stdin", FakeTerminal())
        self.patch(passwd.getpass, "getpass", lambda prompt: next(answers))
        self.assertEqual(passwd.main([self.path.path, "alice"]), 2)
        self.assertEqual(self.stderr.getvalue(), "dualproxy-passwd: passwords do not match\n")
        self.assertFalse(self.path.exists())

    def test_errors(self) -> None:
        """
        Usage mistakes are one line on stderr and exit code 2; the file is
        not touched.
        """
        path = self.path.path
        table = [
            ([], "pw\n", passwd.USAGE),
            ([path], "pw\n", passwd.USAGE),
            ([path, "alice", "extra"], "pw\n", passwd.USAGE),
            (["-f", "alice"], "pw\n", passwd.USAGE),
            ([path, ""], "pw\n", "user name must not be empty"),
            ([path, "al:ice"], "pw\n", "user name 'al:ice' must not contain ':'"),
            ([path, "al\nice"], "pw\n", "user name 'al\\nice' must not contain control characters"),
            ([path, "#alice"], "pw\n", "user name '#alice' must not start with '#' or start or end with spaces"),
            ([path, " alice"], "pw\n", "user name ' alice' must not start with '#' or start or end with spaces"),
            ([path, "alice"], "", "no password on standard input"),
            ([path, "alice"], "\n", "password must not be empty"),
        ]
        for argv, stdin, message in table:
            self.stderr.seek(0)
            self.stderr.truncate()
            self.assertEqual(self.invoke(argv, stdin), 2, argv)
            self.assertEqual(self.stderr.getvalue(), f"dualproxy-passwd: {message}\n", argv)
            self.assertFalse(self.path.exists(), argv)

    def test_unwritable(self) -> None:
        missing = os.path.join(self.mktemp(), "passwd")
        self.assertEqual(self.invoke([missing, "alice"], "pw\n"), 1)
        self.assertEqual(self.stderr.getvalue(), f"dualproxy-passwd: {missing}: No such file or directory\n")

    def test_help(self) -> None:
        self.assertEqual(self.invoke(["--help"]), 0)
        self.assertEqual(self.stdout.getvalue(), passwd.USAGE + "\n")

    def test_argvDefault(self) -> None:
        self.patch(sys, "argv", ["dualproxy-passwd", self.path.path, "bob"])
        self.patch(sys, "stdin", io.StringIO("pw\n"))
        self.assertEqual(passwd.main(), 0)
        self.assertTrue(PasswordFile.load(self.path.path).check("bob", "pw"))
