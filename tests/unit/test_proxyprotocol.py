"""
The PROXY protocol codec, without I/O: both versions and their commands
and families, what is skipped, every malformed header refused, and headers
arriving a byte at a time.
"""

from __future__ import annotations

import struct

from twisted.trial.unittest import SynchronousTestCase

from dualproxy import proxyprotocol
from dualproxy.proxyprotocol import V1_MAX, V2_MAX_LENGTH, V2_SIGNATURE, ProxyHeader, ProxyHeaderError, parse


def v2(command: int, family: int, body: bytes, declared=None) -> bytes:
    return V2_SIGNATURE + struct.pack("!BBH", 0x20 | command, family, len(body) if declared is None else declared) + body


IPV4_BODY = bytes([192, 0, 2, 1, 198, 51, 100, 7]) + struct.pack("!HH", 51234, 443)
IPV6_BODY = (bytes.fromhex("20010db8000000000000000000000001") + bytes.fromhex("20010db8000000000000000000000002")
             + struct.pack("!HH", 1, 65535))


class V1ParseTests(SynchronousTestCase):
    def test_tcp4(self):
        data = b"PROXY TCP4 192.0.2.1 198.51.100.7 51234 443\r\nGET / HTTP/1.1\r\n"
        header, used = parse(data)
        self.assertEqual(header, ProxyHeader(1, ("192.0.2.1", 51234), ("198.51.100.7", 443)))
        self.assertEqual(data[used:], b"GET / HTTP/1.1\r\n")

    def test_tcp6(self):
        header, used = parse(b"PROXY TCP6 2001:db8::1 2001:DB8::2 0 65535\r\n")
        self.assertEqual(header, ProxyHeader(1, ("2001:db8::1", 0), ("2001:db8::2", 65535)))
        self.assertEqual(used, 44)

    def test_unknownKeepsTheRealPeer(self):
        for data in (b"PROXY UNKNOWN\r\n", b"PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n"):
            header, used = parse(data + b"x")
            self.assertEqual((header, used), (ProxyHeader(1), len(data)))

    def test_longestHeader(self):
        """
        The longest v1 header the specification allows, 107 bytes, is read;
        107 bytes without CRLF are refused.
        """
        address = "ffff:" * 7 + "ffff"
        data = f"PROXY UNKNOWN {address} {address} 65535 65535\r\n".encode()
        self.assertEqual(len(data), V1_MAX)
        self.assertEqual(parse(data)[1], V1_MAX)
        self.assertEqual(parse(f"PROXY TCP6 {address} {address} 65535 65535\r\n".encode())[0].source,
                         (address, 65535))
        self.assertIsNone(parse(data[:-1]))
        with self.assertRaises(ProxyHeaderError):
            parse(b"PROXY UNKNOWN " + b"x" * (V1_MAX - 14))

    def test_malformed(self):
        for line in (
            b"PROXY TCP4 192.0.2.1 198.51.100.7 51234\r\n",
            b"PROXY TCP4 192.0.2.1 198.51.100.7 51234 443 extra\r\n",
            b"PROXY TCP4  192.0.2.1 198.51.100.7 51234 443\r\n",
            b"PROXY TCP4 2001:db8::1 198.51.100.7 51234 443\r\n",
            b"PROXY TCP6 192.0.2.1 2001:db8::2 51234 443\r\n",
            b"PROXY TCP4 192.0.2.300 198.51.100.7 51234 443\r\n",
            b"PROXY TCP4 192.0.2.1 198.51.100.7 65536 443\r\n",
            b"PROXY TCP4 192.0.2.1 198.51.100.7 0443 443\r\n",
            b"PROXY TCP4 192.0.2.1 198.51.100.7 -1 443\r\n",
            b"PROXY TCP6 fe80::1%eth0 2001:db8::2 1 2\r\n",
            b"PROXY UDP4 192.0.2.1 198.51.100.7 51234 443\r\n",
            b"PROXY\r\n",
            b"PROXY \r\n",
        ):
            with self.assertRaises(ProxyHeaderError, msg=line):
                parse(line)

    def test_notAHeader(self):
        """
        Anything else is refused at its first wrong byte, without waiting.
        """
        for data in (b"GET / HTTP/1.1\r\n", b"\x05\x01\x00", b"\x16\x03\x01", b"PROXX", b"proxy "):
            with self.assertRaises(ProxyHeaderError, msg=data):
                parse(data)


class V2ParseTests(SynchronousTestCase):
    def test_ipv4(self):
        data = v2(1, 0x11, IPV4_BODY) + b"rest"
        header, used = parse(data)
        self.assertEqual(header, ProxyHeader(2, ("192.0.2.1", 51234), ("198.51.100.7", 443)))
        self.assertEqual(data[used:], b"rest")

    def test_ipv6(self):
        header, used = parse(v2(1, 0x21, IPV6_BODY))
        self.assertEqual(header, ProxyHeader(2, ("2001:db8::1", 1), ("2001:db8::2", 65535)))
        self.assertEqual(used, 16 + 36)

    def test_tlvsSkipped(self):
        tlvs = b"\x01\x00\x02h2" + b"\x05\x00\x04abcd" + b"\xea\x00\x03vpc"
        data = v2(1, 0x11, IPV4_BODY + tlvs) + b"GET"
        header, used = parse(data)
        self.assertEqual(header.source, ("192.0.2.1", 51234))
        self.assertEqual(data[used:], b"GET")

    def test_localKeepsTheRealPeer(self):
        for body in (b"", IPV4_BODY):
            data = v2(0, 0x11 if body else 0, body)
            self.assertEqual(parse(data), (ProxyHeader(2), len(data)))

    def test_unspecifiedAndUnixFamiliesKeepTheRealPeer(self):
        for family, body in ((0x00, b""), (0x31, b"/a/socket".ljust(216, b"\0"))):
            data = v2(1, family, body)
            self.assertEqual(parse(data), (ProxyHeader(2), len(data)))

    def test_malformed(self):
        for data in (
            V2_SIGNATURE + b"\x11\x11\x00\x0c" + IPV4_BODY,  # version 1 in a v2 signature
            v2(2, 0x11, IPV4_BODY),  # unknown command
            v2(1, 0x12, IPV4_BODY),  # UDP
            v2(1, 0x41, IPV4_BODY),  # unknown family
            v2(1, 0x11, IPV4_BODY[:-1]),  # too short for IPv4 addresses
            v2(1, 0x21, IPV4_BODY),  # too short for IPv6 addresses
        ):
            with self.assertRaises(ProxyHeaderError, msg=data):
                parse(data)

    def test_oversized(self):
        """
        A declared length over the cap is refused from the fixed part alone.
        """
        with self.assertRaises(ProxyHeaderError):
            parse(v2(1, 0x11, b"", declared=V2_MAX_LENGTH + 1))
        self.assertIsNone(parse(v2(1, 0x11, b"", declared=V2_MAX_LENGTH)))


class SplitReadTests(SynchronousTestCase):
    def test_everyPrefixNeedsMore(self):
        """
        Every proper prefix of a header asks for more bytes; the whole
        header parses.
        """
        for data in (b"PROXY TCP4 192.0.2.1 198.51.100.7 51234 443\r\n", v2(1, 0x11, IPV4_BODY + b"\x05\x00\x01z"),
                     v2(0, 0, b"")):
            for end in range(len(data)):
                self.assertIsNone(parse(data[:end]), data[:end])
            self.assertEqual(parse(data)[1], len(data))


class WriteTests(SynchronousTestCase):
    def test_roundTrip(self):
        for version in (1, 2):
            for source, destination in ((("192.0.2.1", 51234), ("198.51.100.7", 443)),
                                        (("2001:db8::1", 1), ("2001:db8::2", 65535))):
                data = proxyprotocol.header(version, source, destination)
                self.assertEqual(parse(data), (ProxyHeader(version, source, destination), len(data)))

    def test_v1Text(self):
        self.assertEqual(proxyprotocol.header(1, ("192.0.2.1", 51234), ("198.51.100.7", 443)),
                         b"PROXY TCP4 192.0.2.1 198.51.100.7 51234 443\r\n")

    def test_mixedFamilies(self):
        """
        A dual-stack listener's ::ffff:a.b.c.d client is written as IPv4; an
        IPv4 client of an IPv6 address is mapped into IPv6.
        """
        self.assertEqual(proxyprotocol.header(1, ("::ffff:192.0.2.1", 5), ("198.51.100.7", 80)),
                         b"PROXY TCP4 192.0.2.1 198.51.100.7 5 80\r\n")
        header, _ = parse(proxyprotocol.header(2, ("192.0.2.1", 5), ("2001:db8::2", 80)))
        self.assertEqual(header.source, ("::ffff:c000:201", 5))
        self.assertEqual(header.destination, ("2001:db8::2", 80))

    def test_noAddress(self):
        self.assertEqual(proxyprotocol.header(1, None, ("192.0.2.1", 80)), b"PROXY UNKNOWN\r\n")
        self.assertEqual(proxyprotocol.header(2, None, None), v2(1, 0, b""))

    def test_local(self):
        self.assertEqual(proxyprotocol.local(1), b"PROXY UNKNOWN\r\n")
        self.assertEqual(proxyprotocol.local(2), v2(0, 0, b""))
        self.assertEqual(parse(proxyprotocol.local(2)), (ProxyHeader(2), 16))
