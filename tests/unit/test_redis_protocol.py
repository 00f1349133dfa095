"""
The RESP2 codec, without a server: commands out, replies in any split.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from dualproxy.redis.protocol import ProtocolError, RedisError, ReplyParser, encode

REPLIES = (b"+OK\r\n:42\r\n$-1\r\n$5\r\nhe\r\no\r\n*-1\r\n*0\r\n-ERR wrong type\r\n"
           b"*2\r\n*2\r\n:1\r\n$1\r\na\r\n$0\r\n\r\n")


class EncodeTests(SynchronousTestCase):
    def test_arrayOfBulkStrings(self):
        self.assertEqual(encode("SET", b"k\r\n", 7, 0.5),
                         b"*4\r\n$3\r\nSET\r\n$3\r\nk\r\n\r\n$1\r\n7\r\n$3\r\n0.5\r\n")


class ParserTests(SynchronousTestCase):
    def check(self, replies):
        self.assertEqual(replies[:6], [b"OK", 42, None, b"he\r\no", None, []])
        self.assertIsInstance(replies[6], RedisError)
        self.assertEqual(str(replies[6]), "ERR wrong type")
        self.assertEqual(replies[7], [[1, b"a"], b""])
        self.assertEqual(len(replies), 8)

    def test_whole(self):
        self.check(ReplyParser().feed(REPLIES))

    def test_everySplit(self):
        for split in range(1, len(REPLIES)):
            parser = ReplyParser()
            self.check(parser.feed(REPLIES[:split]) + parser.feed(REPLIES[split:]))

    def test_byteByByte(self):
        parser = ReplyParser()
        replies = []
        for index in range(len(REPLIES)):
            replies += parser.feed(REPLIES[index:index + 1])
        self.check(replies)

    def test_badInputIsAProtocolError(self):
        for data in (b"?what\r\n", b":12x\r\n", b"$3\r\nabcXY", b"$100\r\n"):
            parser = ReplyParser(maxBulk=10)
            self.assertRaises(ProtocolError, parser.feed, data)

    def test_endlessLineRefused(self):
        self.assertRaises(ProtocolError, ReplyParser().feed, b"+" + b"x" * (70 << 10))

    def test_deepNestingRefused(self):
        self.assertRaises(ProtocolError, ReplyParser().feed, b"*1\r\n" * 20)
