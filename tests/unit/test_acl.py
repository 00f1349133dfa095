"""
Tests for L{dualproxy.policy.acl}: client networks, the destination deny
list, the private-address rule and CONNECT ports.
"""

from __future__ import annotations

from ipaddress import ip_network

from twisted.trial.unittest import SynchronousTestCase

from dualproxy.policy import acl
from dualproxy.policy.acl import ClientACL, DestinationPolicy, PRIVATE_NETWORKS


def networks(*texts):
    return [ip_network(text) for text in texts]


# (networks, peer host, allowed)
CLIENTS = [
    (("127.0.0.0/8",), "127.0.0.1", True),
    (("127.0.0.0/8",), "127.255.255.254", True),
    (("127.0.0.0/8",), "128.0.0.1", False),
    (("127.0.0.0/8",), "::1", False),
    (("127.0.0.0/8", "::1/128"), "::1", True),
    (("127.0.0.0/8",), "::ffff:127.0.0.1", True),
    (("127.0.0.0/8",), "::ffff:7f00:1", True),
    (("127.0.0.0/8",), "::ffff:10.0.0.1", False),
    (("::ffff:0:0/96",), "::ffff:10.0.0.1", True),
    (("10.0.0.0/8",), "10.1.2.3", True),
    (("10.0.0.0/8",), "11.1.2.3", False),
    (("192.168.0.0/16", "2001:db8::/32"), "2001:db8::1", True),
    (("192.168.0.0/16", "2001:db8::/32"), "2001:db9::1", False),
    (("fe80::/10",), "fe80::1%eth0", True),
    ((), "127.0.0.1", False),
    (("0.0.0.0/0",), "203.0.113.7", True),
    (("0.0.0.0/0",), "2001:db8::1", False),
    (("::/0",), "2001:db8::1", True),
    (("127.0.0.0/8",), "localhost", False),
    (("127.0.0.0/8",), "", False),
    (("127.0.0.0/8",), "127.0.0.1 ", False),
]


class ClientACLTests(SynchronousTestCase):
    def test_table(self) -> None:
        for nets, host, expected in CLIENTS:
            clients = ClientACL(networks(*nets))
            self.assertEqual(clients.allows(host), expected, (nets, host))
            self.assertEqual(clients.allows(host), expected, ("cached", nets, host))

    def test_unixSocket(self) -> None:
        """
        A peer without an IP address (UNIX socket) is local and allowed, even
        by an empty list.
        """
        self.assertTrue(ClientACL([]).allows(None))

    def test_cacheBounded(self) -> None:
        clients = ClientACL(networks("10.0.0.0/8"))
        for index in range(acl._CACHE_SIZE + 50):
            host = f"10.0.{index // 256}.{index % 256}"
            self.assertTrue(clients.allows(host))
        self.assertEqual(len(clients._cache), acl._CACHE_SIZE)
        self.assertFalse(clients.allows("11.0.0.1"))
        self.assertEqual(len(clients._cache), acl._CACHE_SIZE)


class PrivateNetworksTests(SynchronousTestCase):
    def test_listed(self) -> None:
        for text in (
            "127.0.0.0/8", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16",
            "0.0.0.0/8", "100.64.0.0/10", "::1/128", "::/128", "fc00::/7", "fe80::/10",
        ):
            self.assertIn(ip_network(text), PRIVATE_NETWORKS)


DENY = ["example.com", ".example.org", "Mixed.Example.NET.", "203.0.113.0/24", "2001:db8::/32", "198.51.100.9"]

# (host, reason or None) with the policy DENY, no allow networks.
HOSTS = [
    ("example.com", "destination example.com is denied"),
    ("EXAMPLE.COM", "destination example.com is denied"),
    ("example.com.", "destination example.com is denied"),
    ("www.example.com", None),  # exact entry: subdomains are not denied
    ("notexample.com", None),
    ("example.com.evil", None),
    ("example.org", "destination example.org is denied"),  # Squid dstdomain: the domain itself
    ("www.example.org", "destination www.example.org is denied"),
    ("a.b.c.Example.Org.", "destination a.b.c.example.org is denied"),
    ("badexample.org", None),  # a suffix matches whole labels only
    ("example.org.uk", None),
    ("mixed.example.net", "destination mixed.example.net is denied"),
    ("www.mixed.example.net", None),
    ("example.net", None),
    ("public.test", None),
    ("", "destination host is empty"),
    (".", "destination host is empty"),
    # IP literals get the address rules.
    ("203.0.113.9", "destination 203.0.113.9 is denied"),
    ("203.0.114.9", None),
    ("198.51.100.9", "destination 198.51.100.9 is denied"),
    ("198.51.100.10", None),
    ("[2001:db8::5]", "destination 2001:db8::5 is denied"),
    ("2001:db8::5", "destination 2001:db8::5 is denied"),
    ("[2001:DB9::5]", None),
    ("[::ffff:203.0.113.9]", "destination ::ffff:203.0.113.9 is denied"),
    ("127.0.0.1", "destination 127.0.0.1 is a private address"),
    ("127.0.0.1.", "destination 127.0.0.1 is a private address"),
    ("[::1]", "destination ::1 is a private address"),
    ("[::]", "destination :: is a private address"),
    ("[::ffff:127.0.0.1]", "destination ::ffff:127.0.0.1 is a private address"),
    ("169.254.169.254", "destination 169.254.169.254 is a private address"),
    ("[fe80::1%25eth0]", "destination fe80::1%25eth0 is a private address"),  # RFC 6874 zone ID
    # Legacy IPv4 spellings that resolvers turn into the loopback address.
    ("2130706433", "destination 2130706433 is a private address"),
    ("0x7f.1", "destination 0x7f.1 is a private address"),
    ("0177.0.0.1", "destination 0177.0.0.1 is a private address"),
    ("10.1", "destination 10.1 is a private address"),
    ("1e100.net", None),
    ("cafe.example", None),
    ("93.184.216.34", None),
]

# (resolved address, reason or None) with the policy DENY, no allow networks.
ADDRESSES = [
    ("93.184.216.34", None),
    ("2606:2800:220:1:248:1893:25c8:1946", None),
    ("127.0.0.1", "destination 127.0.0.1 is a private address"),
    ("127.255.0.1", "destination 127.255.0.1 is a private address"),
    ("10.0.0.1", "destination 10.0.0.1 is a private address"),
    ("172.16.0.1", "destination 172.16.0.1 is a private address"),
    ("172.31.255.255", "destination 172.31.255.255 is a private address"),
    ("172.32.0.1", None),
    ("192.168.1.1", "destination 192.168.1.1 is a private address"),
    ("169.254.169.254", "destination 169.254.169.254 is a private address"),
    ("0.0.0.0", "destination 0.0.0.0 is a private address"),
    ("100.64.0.1", "destination 100.64.0.1 is a private address"),
    ("100.128.0.1", None),
    ("::1", "destination ::1 is a private address"),
    ("::", "destination :: is a private address"),
    ("fc00::1", "destination fc00::1 is a private address"),
    ("fd12:3456::1", "destination fd12:3456::1 is a private address"),
    ("fe80::1", "destination fe80::1 is a private address"),
    ("fe80::1%eth0", "destination fe80::1%eth0 is a private address"),
    # IPv6 spellings of IPv4 addresses are unwrapped before checking.
    ("::ffff:127.0.0.1", "destination ::ffff:127.0.0.1 is a private address"),  # mapped
    ("::ffff:a9fe:a9fe", "destination ::ffff:a9fe:a9fe is a private address"),
    ("::ffff:93.184.216.34", None),
    ("::10.0.0.1", "destination ::10.0.0.1 is a private address"),  # IPv4-compatible (RFC 4291 2.5.5.1)
    ("64:ff9b::10.0.0.1", "destination 64:ff9b::10.0.0.1 is a private address"),  # NAT64 (RFC 6052)
    ("64:ff9b::93.184.216.34", None),
    ("2002:7f00:1::", "destination 2002:7f00:1:: is a private address"),  # 6to4 (RFC 3056)
    ("2002:5db8:d822::", None),
    ("203.0.113.1", "destination 203.0.113.1 is denied"),
    ("::ffff:203.0.113.1", "destination ::ffff:203.0.113.1 is denied"),
    ("2001:db8:ffff::1", "destination 2001:db8:ffff::1 is denied"),
    ("example.com", "destination example.com is not an IP address"),
    ("", "destination  is not an IP address"),
]


class DestinationPolicyTests(SynchronousTestCase):
    def test_hosts(self) -> None:
        policy = DestinationPolicy(DENY, [], [443])
        for host, reason in HOSTS:
            self.assertEqual(policy.checkHost(host), reason, host)

    def test_namesBelowOnly(self) -> None:
        policy = DestinationPolicy(["*.ads.test"], [], [443])
        self.assertEqual(policy.checkHost("x.ads.test"), "destination x.ads.test is denied")
        self.assertIsNone(policy.checkHost("ads.test"))

    def test_addresses(self) -> None:
        policy = DestinationPolicy(DENY, [], [443])
        for address, reason in ADDRESSES:
            self.assertEqual(policy.checkAddress(address), reason, address)

    def test_emptyPolicy(self) -> None:
        policy = DestinationPolicy([], [], [])
        self.assertIsNone(policy.checkHost("example.com"))
        self.assertIsNone(policy.checkAddress("203.0.113.1"))
        self.assertEqual(policy.checkAddress("10.0.0.1"), "destination 10.0.0.1 is a private address")

    def test_allowNetworks(self) -> None:
        """
        Allow networks re-enable private destinations, in every spelling,
        and nothing else.
        """
        policy = DestinationPolicy([], networks("127.0.0.0/8", "fd00::/8"), [443])
        table = [
            ("127.0.0.1", None),
            ("127.1.2.3", None),
            ("::ffff:127.0.0.1", None),
            ("::127.0.0.1", None),
            ("fd00::1", None),
            ("::1", "destination ::1 is a private address"),
            ("fc00::1", "destination fc00::1 is a private address"),
            ("10.0.0.1", "destination 10.0.0.1 is a private address"),
            ("169.254.169.254", "destination 169.254.169.254 is a private address"),
            ("93.184.216.34", None),
        ]
        for address, reason in table:
            self.assertEqual(policy.checkAddress(address), reason, address)
        self.assertIsNone(policy.checkHost("localhost"))
        self.assertIsNone(policy.checkHost("127.0.0.1"))
        self.assertIsNone(policy.checkHost("[::ffff:127.0.0.1]"))

    def test_allowMetadataOnly(self) -> None:
        policy = DestinationPolicy([], networks("169.254.169.254/32"), [443])
        self.assertIsNone(policy.checkAddress("169.254.169.254"))
        self.assertEqual(policy.checkAddress("169.254.169.253"), "destination 169.254.169.253 is a private address")

    def test_denyBeatsAllow(self) -> None:
        """
        A denied network stays denied even when an allow network covers it.
        """
        policy = DestinationPolicy(["10.1.0.0/16"], networks("10.0.0.0/8"), [443])
        self.assertEqual(policy.checkAddress("10.1.0.1"), "destination 10.1.0.1 is denied")
        self.assertIsNone(policy.checkAddress("10.2.0.1"))

    def test_hostIPv6Network(self) -> None:
        policy = DestinationPolicy(["2001:db8::/32"], [], [443])
        self.assertEqual(policy.checkHost("[2001:db8::1]"), "destination 2001:db8::1 is denied")
        self.assertIsNone(policy.checkHost("[2001:db80::1]"))

    def test_connectPorts(self) -> None:
        """
        CONNECT may only reach the listed ports (RFC 9110 section 9.3.6
        recommends restricting them).
        """
        policy = DestinationPolicy([], [], [443, 8443])
        for port, allowed in [(443, True), (8443, True), (80, False), (25, False), (22, False), (0, False)]:
            self.assertEqual(policy.connectAllowed(port), allowed, port)
        self.assertFalse(DestinationPolicy([], [], []).connectAllowed(443))
