"""
The pure parts of dualproxy.acme: the renewal schedule, the HTTP-01 map
and its resource, and private file writing.
"""

from __future__ import annotations

import datetime
import os
import stat

from twisted.trial.unittest import SynchronousTestCase
from twisted.web.test.requesthelper import DummyRequest

from dualproxy.acme.challenges import ChallengeTokens, HTTP01Resource, challengeAnswer
from dualproxy.acme.renewal import renewalTime, retryDelay, shouldRenew

try:
    from dualproxy.acme.client import certificateDirectory, loadOrCreateKey, writePrivate
except ImportError:
    writePrivate = None

UTC = datetime.timezone.utc
START = datetime.datetime(2026, 1, 1, tzinfo=UTC)
END = START + datetime.timedelta(days=90)


class RenewalTests(SynchronousTestCase):
    def test_twoThirdsOfLifetime(self):
        self.assertEqual(renewalTime(START, END), START + datetime.timedelta(days=60))

    def test_shouldRenew(self):
        self.assertFalse(shouldRenew(START + datetime.timedelta(days=59), START, END))
        self.assertTrue(shouldRenew(START + datetime.timedelta(days=60), START, END))
        self.assertTrue(shouldRenew(END + datetime.timedelta(days=1), START, END))

    def test_fraction(self):
        self.assertEqual(renewalTime(START, END, fraction=0.5), START + datetime.timedelta(days=45))

    def test_backoffDoublesToADay(self):
        self.assertEqual([retryDelay(n, 0) for n in range(1, 6)], [60, 120, 240, 480, 960])
        self.assertEqual(retryDelay(11, 0), 61440)
        self.assertEqual(retryDelay(12, 0), 86400)
        self.assertEqual(retryDelay(10 ** 6, 0), 86400)

    def test_jitterShortensByAtMostAQuarter(self):
        self.assertEqual(retryDelay(1, 0.5), 52.5)
        self.assertGreater(retryDelay(20, 0.999999), 86400 * 0.75)
        self.assertLessEqual(retryDelay(20, 0.999999), 86400)

    def test_backoffRejectsNonsense(self):
        self.assertRaises(ValueError, retryDelay, 0, 0)
        self.assertRaises(ValueError, retryDelay, 1, 1)
        self.assertRaises(ValueError, retryDelay, 1, -0.1)


class ChallengeTests(SynchronousTestCase):
    def setUp(self):
        self.tokens = ChallengeTokens()
        self.tokens.publish("tok-EN_1", "tok-EN_1.thumbprint")

    def test_answersPublishedToken(self):
        self.assertEqual(challengeAnswer(self.tokens, b"/.well-known/acme-challenge/tok-EN_1"),
                         b"tok-EN_1.thumbprint")

    def test_otherPathsAreNotChallenges(self):
        for path in [b"/", b"/.well-known/acme-challenge/", b"/.well-known/acme-challenge/other",
                     b"/.well-known/acme-challenge/tok-EN_1/x", b"/.well-known/acme-challenge/..",
                     b"/x/.well-known/acme-challenge/tok-EN_1", b"/.well-known/acme-challenge/t\xff"]:
            self.assertIsNone(challengeAnswer(self.tokens, path), path)

    def test_withdraw(self):
        self.tokens.withdraw("tok-EN_1")
        self.tokens.withdraw("never-published")
        self.assertEqual(len(self.tokens), 0)
        self.assertIsNone(challengeAnswer(self.tokens, b"/.well-known/acme-challenge/tok-EN_1"))

    def render(self, path: bytes):
        request = DummyRequest(path.lstrip(b"/").split(b"/"))
        request.path = path
        body = HTTP01Resource(self.tokens).render_GET(request)
        return request.responseCode or 200, request.responseHeaders.getRawHeaders(b"content-type"), body

    def test_resourceServesTextPlain(self):
        self.assertEqual(self.render(b"/.well-known/acme-challenge/tok-EN_1"),
                         (200, [b"text/plain"], b"tok-EN_1.thumbprint"))

    def test_resourceNotFound(self):
        self.assertEqual(self.render(b"/.well-known/acme-challenge/nope")[0], 404)


class StorageTests(SynchronousTestCase):
    def setUp(self):
        if writePrivate is None:
            self.skipTest("the acme extra is not installed")
        self.directory = os.path.abspath(self.mktemp())

    def test_writePrivateIs0600AndLeavesNoTemporary(self):
        path = os.path.join(self.directory, "a", "key.pem")
        writePrivate(path, b"one")
        writePrivate(path, b"two")
        with open(path, "rb") as f:
            self.assertEqual(f.read(), b"two")
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        self.assertEqual(os.listdir(os.path.dirname(path)), ["key.pem"])

    def test_writePrivateMode(self):
        path = os.path.join(self.directory, "cert.pem")
        writePrivate(path, b"public", mode=0o644)
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o644)

    def test_loadOrCreateKeyKeepsTheKey(self):
        path = os.path.join(self.directory, "account", "key.pem")
        first = loadOrCreateKey(path)
        self.assertIn(b"PRIVATE KEY", first)
        self.assertEqual(loadOrCreateKey(path), first)
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)

    def test_certificateDirectory(self):
        self.assertEqual(certificateDirectory("/s", "example.com"), "/s/certs/example.com")
        self.assertEqual(certificateDirectory("/s", "*.example.com"), "/s/certs/_.example.com")
        for bad in ["", "../x", "a/b", ".hidden"]:
            self.assertRaises(ValueError, certificateDirectory, "/s", bad)
