"""
ClientHellos made by OpenSSL itself read for their server name and ALPN
offer, whole, byte by byte and spread over several records; what is not
one refused.
"""

from __future__ import annotations

from typing import Optional, Sequence

from OpenSSL import SSL
from twisted.trial.unittest import SynchronousTestCase

from dualproxy.clienthello import MAX_HELLO, ClientHello, HelloError, readClientHello


def clientHello(name: Optional[bytes] = b"Example.COM", alpn: Sequence[bytes] = ()) -> bytes:
    context = SSL.Context(SSL.TLS_CLIENT_METHOD)
    if alpn:
        context.set_alpn_protos(list(alpn))
    connection = SSL.Connection(context, None)
    if name is not None:
        connection.set_tlsext_host_name(name)
    connection.set_connect_state()
    try:
        connection.do_handshake()
    except SSL.WantReadError:
        pass
    return connection.bio_read(MAX_HELLO)


def fragmented(record: bytes, size: int) -> bytes:
    """
    The handshake record C{record} as several records of C{size} bytes.
    """
    body = record[5:]
    return b"".join(record[:3] + len(body[i:i + size]).to_bytes(2, "big") + body[i:i + size]
                    for i in range(0, len(body), size))


class ReadTests(SynchronousTestCase):
    def test_nameAndProtocols(self):
        self.assertEqual(readClientHello(clientHello(alpn=[b"h2", b"http/1.1"])),
                         ClientHello("example.com", (b"h2", b"http/1.1")))

    def test_noNameNoProtocols(self):
        self.assertEqual(readClientHello(clientHello(None)), ClientHello(None, ()))

    def test_moreBytesNeeded(self):
        hello = clientHello()
        for end in range(len(hello)):
            self.assertIsNone(readClientHello(hello[:end]), end)

    def test_overSeveralRecords(self):
        hello = fragmented(clientHello(b"a.example", [b"acme-tls/1"]), 50)
        self.assertGreater(hello.count(b"\x16\x03"), 3)
        self.assertIsNone(readClientHello(hello[:-1]))
        self.assertEqual(readClientHello(hello), ClientHello("a.example", (b"acme-tls/1",)))

    def test_bytesAfterTheHelloIgnored(self):
        self.assertEqual(readClientHello(clientHello() + b"\x17\x03\x03junk").serverName, "example.com")

    def test_notAHello(self):
        hello = clientHello()
        for data in [
            b"GET / HTTP/1.1\r\n\r\n",
            b"\x80\x2e\x01\x00\x02",  # SSLv2
            b"\x16\x03\x01\x00\x00",  # an empty record
            hello[:5] + b"\x02" + hello[6:],  # a ServerHello
            hello[:6] + (MAX_HELLO + 1).to_bytes(3, "big") + hello[9:],
            b"\x16\x03\x01\x00\x06\x01\x00\x00\x02\x03\x03",  # a hello that ends after its version
        ]:
            self.assertRaises(HelloError, readClientHello, data)
