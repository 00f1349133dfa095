"""
The ACME client against a real ACME server (pebble): HTTP-01 answered by
a twisted.web site on the port pebble validates, for C{localhost}.
"""

from __future__ import annotations

import os
import stat

from twisted.internet import reactor, threads
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import SkipTest, TestCase
from twisted.web.server import Site

from dualproxy.acme.challenges import ChallengeTokens, HTTP01Resource

from ..pebbleserver import startPebble

try:
    import requests
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import load_pem_private_key
    from cryptography.x509.verification import PolicyBuilder, Store

    from dualproxy.acme.client import AcmeClient
except ImportError:
    AcmeClient = None


def _mode(path: str) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


class PebbleTests(TestCase):
    @inlineCallbacks
    def setUp(self):
        if AcmeClient is None:
            raise SkipTest("the acme extra is not installed")
        self.tokens = ChallengeTokens()
        port = reactor.listenTCP(0, Site(HTTP01Resource(self.tokens)), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.pebble = yield startPebble(self, httpPort=port.getHost().port)
        self.storage = os.path.abspath(self.mktemp())

    def client(self) -> AcmeClient:
        return AcmeClient(reactor, self.pebble.directoryURL, self.storage, self.tokens.publish,
                          self.tokens.withdraw, contact=["mailto:ops@example.com"], verify=self.pebble.caBundle)

    def root(self):
        response = requests.get(self.pebble.managementURL + "/roots/0", verify=self.pebble.caBundle, timeout=10)
        response.raise_for_status()
        return x509.load_pem_x509_certificate(response.content)

    @inlineCallbacks
    def test_obtainsCertificate(self):
        paths = yield self.client().obtain(["localhost"])
        self.assertEqual(paths.certificate, os.path.join(self.storage, "certs", "localhost", "cert.pem"))
        self.assertEqual(_mode(paths.key), 0o600)
        self.assertEqual(_mode(os.path.join(self.storage, "account", "key.pem")), 0o600)
        self.assertEqual(len(self.tokens), 0)
        with open(paths.certificate, "rb") as f:
            leaf, *intermediates = x509.load_pem_x509_certificates(f.read())
        root = yield threads.deferToThread(self.root)
        verifier = PolicyBuilder().store(Store([root])).build_server_verifier(x509.DNSName("localhost"))
        chain = verifier.verify(leaf, intermediates)
        self.assertEqual(chain[-1], root)
        names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        self.assertEqual(names.get_values_for_type(x509.DNSName), ["localhost"])
        with open(paths.key, "rb") as f:
            key = f.read()
        self.assertEqual(load_pem_private_key(key, None).public_key(), leaf.public_key())

    @inlineCallbacks
    def test_secondRunReusesAccount(self):
        first = yield self.client().register()
        second = yield self.client().register()
        self.assertEqual(first, second)
        paths = yield self.client().obtain(["localhost"])
        self.assertTrue(os.path.exists(paths.certificate))
