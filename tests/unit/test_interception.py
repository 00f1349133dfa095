"""
The interception CA: made safely, refused when unsafe, and the leaves it
mints as clients need them.
"""

from __future__ import annotations

import contextlib
import datetime
import io
import os
import stat
from ipaddress import ip_network

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from twisted.trial.unittest import SynchronousTestCase

from dualproxy.interception.authority import (
    LEAF_LIFETIME,
    LeafMinter,
    createAuthority,
    loadAuthority,
)
from dualproxy.forward.intercept import InterceptPolicy
from dualproxy.forward.settings import checkForward, parseForward
from dualproxy.interception.cli import main
from dualproxy.settings.model import InterceptSettings
from dualproxy.settings.values import ConfigError
from dualproxy.tls import TLSConfigError

from ..certs import CertificateAuthority


class AuthorityTests(SynchronousTestCase):
    def setUp(self):
        self.directory = self.mktemp()
        self.certPath, self.keyPath = createAuthority(self.directory)

    def test_keyIsPrivate(self):
        self.assertEqual(stat.S_IMODE(os.stat(self.keyPath).st_mode), 0o600)
        self.assertTrue(loadAuthority(self.certPath, self.keyPath).chain[0].extensions
                        .get_extension_for_class(x509.BasicConstraints).value.ca)

    def test_neverOverwritten(self):
        with self.assertRaises(FileExistsError):
            createAuthority(self.directory)

    def test_readableKeyRefused(self):
        os.chmod(self.keyPath, 0o640)
        with self.assertRaises(TLSConfigError) as raised:
            loadAuthority(self.certPath, self.keyPath)
        self.assertIn("chmod 600", str(raised.exception))

    def test_leafNotCARefused(self):
        ca = CertificateAuthority(self.directory, stem="other")
        cert, key = ca.issue("leaf", ["example.com"])
        os.chmod(key, 0o600)
        with self.assertRaises(TLSConfigError) as raised:
            loadAuthority(cert, key)
        self.assertIn("not a CA certificate", str(raised.exception))


class MinterTests(SynchronousTestCase):
    def setUp(self):
        directory = self.mktemp()
        self.now = datetime.datetime.now(datetime.timezone.utc)
        self.authority = loadAuthority(*createAuthority(directory))
        self.minter = LeafMinter(self.authority, 2, (b"h2", b"http/1.1"), clock=lambda: self.now)

    def test_leafNamesHostAndIsSignedByCA(self):
        pair = self.minter.mint("Example.com")
        leaf = pair.chain[0]
        self.assertEqual(leaf.issuer, self.authority.chain[0].subject)
        self.authority.chain[0].public_key().verify(leaf.signature, leaf.tbs_certificate_bytes,
                                                    ec.ECDSA(leaf.signature_hash_algorithm))
        self.assertEqual(pair.names, ("example.com",))
        address = self.minter.mint("127.0.0.1").chain[0].extensions.get_extension_for_class(
            x509.SubjectAlternativeName).value.get_values_for_type(x509.IPAddress)
        self.assertEqual([str(a) for a in address], ["127.0.0.1"])

    def test_contextsCachedBoundedAndRenewed(self):
        first = self.minter.contextFor("a.test")
        self.assertIs(self.minter.contextFor("A.test."), first)
        self.minter.contextFor("b.test")
        self.minter.contextFor("c.test")
        self.assertEqual(len(self.minter), 2)
        self.assertIsNot(self.minter.contextFor("a.test"), first, "evicted, then minted again")
        minted = self.minter.minted
        self.now += LEAF_LIFETIME / 2
        self.minter.contextFor("a.test")
        self.assertEqual(self.minter.minted, minted + 1, "minted again at half its lifetime")


class CommandTests(SynchronousTestCase):
    def test_initThenRefusesToOverwrite(self):
        directory = self.mktemp()
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            self.assertEqual(main(["init", directory]), 0)
            self.assertEqual(main(["init", directory]), 1)
        self.assertIn("SHA-256 fingerprint: ", out.getvalue())
        self.assertEqual(err.getvalue().count("\n"), 1)
        self.assertIn("exists already", err.getvalue())
        self.assertEqual(stat.S_IMODE(os.stat(os.path.join(directory, "ca-key.pem")).st_mode), 0o600)


class SettingsTests(SynchronousTestCase):
    def test_caRequiredAndChecked(self):
        with self.assertRaises(ConfigError) as raised:
            parseForward({"intercept": {"ca_cert": "ca.pem"}}, "/")
        self.assertIn("forward.intercept.ca_key", str(raised.exception))
        certPath, keyPath = createAuthority(os.path.abspath(self.mktemp()))
        settings = parseForward({"intercept": {"ca_cert": certPath, "ca_key": keyPath,
                                               "bypass": [".bank.test", "*.CDN.test"]}}, "/")
        self.assertEqual((settings.intercept.ports, settings.intercept.bypass), ((443,), (".bank.test", "*.cdn.test")))
        checkForward(settings, None)
        os.chmod(keyPath, 0o644)
        with self.assertRaises(ConfigError) as raised:
            checkForward(settings, None)
        self.assertIn("readable by others", str(raised.exception))


class PolicyTests(SynchronousTestCase):
    def policy(self, **table):
        return InterceptPolicy(InterceptSettings("ca.pem", "ca-key.pem", **table))

    def test_portsBypassAndClients(self):
        policy = self.policy(bypass=(".bank.test", "10.0.0.0/8", "*.cdn.test"))
        self.assertFalse(policy.intercepts("127.0.0.1", "a.cdn.test", 443))
        self.assertTrue(policy.intercepts("127.0.0.1", "cdn.test", 443), "*. stands for the names below only")
        self.assertTrue(policy.intercepts("127.0.0.1", "example.com", 443))
        self.assertFalse(policy.intercepts("127.0.0.1", "example.com", 8443), "not an intercepted port")
        self.assertFalse(policy.intercepts("127.0.0.1", "www.bank.test", 443))
        self.assertFalse(policy.intercepts("127.0.0.1", "10.1.2.3", 443))
        self.assertTrue(policy.intercepts("127.0.0.1", "11.1.2.3", 443))
        listed = self.policy(clients=(ip_network("192.168.0.0/24"),))
        self.assertTrue(listed.intercepts("192.168.0.9", "example.com", 443))
        self.assertFalse(listed.intercepts("192.168.1.9", "example.com", 443), "another client's tunnel passes")
        self.assertFalse(listed.intercepts(None, "example.com", 443))
