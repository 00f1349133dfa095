"""
Hypothesis strategies for HTTP/1.x wire bytes, for the framing properties.

Most of what they draw is near-valid: real message shapes whose names,
values, line ends and framing come from alphabets rich in the bytes where
parsers disagree (CR, LF, NUL, other controls, spaces, colons, commas,
obs-text).  Some of it is mutated (bytes flipped, inserted, deleted) and
some is noise, so that every refusal path is reached too.
"""

from __future__ import annotations

from typing import List

from hypothesis import strategies as st

TCHARS = b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
# Bytes that have split parsers before: controls, separators, obs-text.
NASTY = b"\x00\x01\x08\t\n\x0b\x0c\r\x1f \"(),/:;<=>?@[\\]{}\x7f\x80\xa0\xff"
VISIBLE = bytes(range(0x21, 0x7F))


def bytesFrom(alphabet: bytes, minSize: int = 0, maxSize: int = 12) -> st.SearchStrategy:
    """
    Byte strings over C{alphabet}.
    """
    return st.lists(st.sampled_from([alphabet[i:i + 1] for i in range(len(alphabet))]),
                    min_size=minSize, max_size=maxSize).map(b"".join)


def mostly(common: st.SearchStrategy, rare: st.SearchStrategy, tenths: int = 8) -> st.SearchStrategy:
    """
    C{common} in about C{tenths} of ten draws, else C{rare}.
    """
    return st.integers(0, 9).flatmap(lambda n: common if n < tenths else rare)


tokens = bytesFrom(TCHARS, 1, 10)
# Mostly clean text, sometimes with the nasty bytes mixed in.
texts = mostly(bytesFrom(VISIBLE + b" \t", 0, 12), bytesFrom(VISIBLE + NASTY, 0, 12), 7)

lineEnds = st.sampled_from([b"\r\n"] * 12 + [b"\n", b"\n", b"\r", b"\r\r\n", b" \r\n", b"\n\r"])

FIELD_NAMES = [
    b"Host", b"host", b"Content-Length", b"content-length", b"Transfer-Encoding", b"transfer-encoding",
    b"Connection", b"Proxy-Connection", b"Keep-Alive", b"TE", b"Trailer", b"Upgrade", b"Expect",
    b"Accept", b"X-Test", b"Cookie", b"Content-Type", b"Via", b"Cache-Control",
]
# Fields a valid message may repeat or carry beside its own framing: the
# connection-specific ones among them test what a proxy must drop.
BENIGN_NAMES = [
    b"Connection", b"connection", b"Proxy-Connection", b"Keep-Alive", b"TE", b"Trailer", b"Upgrade",
    b"Expect", b"Accept", b"X-Test", b"x-test", b"Cookie", b"Content-Type", b"Via", b"Cache-Control",
]

nastyNames = st.one_of(
    st.sampled_from(FIELD_NAMES),
    tokens,
    # Names no parser should accept: a space before the colon, controls.
    st.tuples(st.sampled_from(FIELD_NAMES), st.sampled_from([b" ", b"\t", b"\x00", b"\r", b"@", b"\x80"]))
    .map(b"".join),
)
cleanNames = mostly(st.sampled_from(BENIGN_NAMES), tokens, 7)
# Field values as RFC 9110 allows them: visible ASCII, obs-text, inner
# spaces and tabs.
cleanTexts = bytesFrom(VISIBLE + b" \t\x80\xff", 0, 12)

_LENGTHS = [b"0", b"5", b" 5", b"5 ", b"5, 5", b"5,6", b"+5", b"-1", b"0x5", b"", b"5 5", b"05",
            b"99999999999999999999", b"00", b"1,", b",1"]
_CODINGS = [b"chunked", b"Chunked", b"CHUNKED", b" chunked", b"chunked, chunked", b"gzip, chunked",
            b"chunked, gzip", b"identity", b"chunked;q=1", b'"chunked"', b"", b",chunked", b"chunked,",
            b"gzip", b"chunked\x0b"]
# Connection options, valid or not: naming a framing field, or Host, is a
# sender's mistake a proxy must survive.
_OPTIONS = [b"close", b"keep-alive", b"Keep-Alive", b"Upgrade", b"content-length", b"Content-Length",
            b"transfer-encoding", b"host", b"x-test", b"close, x-test", b"te", b"via", b"expect",
            b"X-Test , cookie", b"keep-alive, content-length", b"content-length, host"]
_EXPECTS = [b"100-continue", b"100-Continue", b"nothing"]

_VALUES_FOR = {
    b"content-length": st.sampled_from(_LENGTHS),
    b"transfer-encoding": st.sampled_from(_CODINGS),
    b"connection": st.sampled_from(_OPTIONS),
    b"proxy-connection": st.sampled_from(_OPTIONS),
    b"expect": st.sampled_from(_EXPECTS),
    b"host": st.sampled_from([b"origin.test", b"origin.test:8080", b"127.0.0.1", b"", b"a b", b"[::1]"]),
}


@st.composite
def fieldValues(draw, name: bytes, clean: bool) -> bytes:
    special = _VALUES_FOR.get(name.lower())
    if special is not None and draw(st.integers(0, 3)):
        return draw(special)
    return draw(cleanTexts if clean else texts)


@st.composite
def fields(draw, clean: bool, lineEnd: bytes = b"\r\n", maxFields: int = 5) -> List[bytes]:
    """
    Field lines: C{clean} ones are valid (though what they say may not
    be), the others mix in folds, missing colons and odd line ends.
    """
    lines = []
    for _ in range(draw(st.integers(0, maxFields))):
        name = draw(cleanNames if clean else nastyNames)
        value = draw(fieldValues(name, clean))
        shape = 2 if clean else draw(st.integers(0, 9))
        if shape == 0:
            line = b" " + name + b": " + value  # obs-fold, or white space before the first field
        elif shape == 1:
            line = name + b" " + value  # no colon
        else:
            line = name + draw(st.sampled_from([b": ", b":", b":\t", b":  "])) + value + draw(
                st.sampled_from([b""] * 4 + [b" ", b"\t"]))
        lines.append(line + (lineEnd if clean else draw(lineEnds)))
    return lines


def insertField(lines: List[bytes], index: int, line: bytes) -> List[bytes]:
    return lines[:index] + [line] + lines[index:]


@st.composite
def chunkedBody(draw, clean: bool, lineEnd: bytes = b"\r\n"):
    """
    A chunked body (C{wire}, C{data}): sizes in either case and with leading
    zeros, extensions, trailers; unless C{clean}, odd line ends too.
    """
    ends = st.just(lineEnd) if clean else lineEnds
    wire = []
    data = []
    for chunk in draw(st.lists(st.binary(min_size=1, max_size=20), max_size=3)):
        size = b"%x" % len(chunk)
        if draw(st.booleans()):
            size = size.upper()
        size = b"0" * draw(st.integers(0, 2)) + size
        wire.append(size + draw(extensions(clean)) + draw(ends) + chunk + draw(ends))
        data.append(chunk)
    wire.append(b"0" * draw(st.integers(1, 3)) + draw(extensions(clean)) + draw(ends))
    wire.extend(draw(fields(clean, lineEnd, 2)))
    wire.append(draw(ends))
    return b"".join(wire), b"".join(data)


def extensions(clean: bool) -> st.SearchStrategy:
    valid = st.tuples(st.sampled_from([b";", b" ;", b"\t; "]), tokens,
                      st.sampled_from([b"", b"=", b"=x", b'="a b"', b'="\\""'])).map(b"".join)
    if clean:
        return mostly(st.just(b""), valid, 6)
    return mostly(st.just(b""), st.one_of(valid, st.tuples(st.just(b";"), texts).map(b"".join)), 6)


@st.composite
def body(draw, head: List[bytes], clean: bool, lineEnd: bytes, otherwise: str = "none"):
    """
    A body for a head (C{head}'s fields, to which its framing field is
    added at a random place): by Content-Length, chunked, or C{otherwise}
    (a request's "none", a response's "close": up to the end).
    """
    framing = draw(st.sampled_from([otherwise, "length", "chunked"]))
    if framing == "chunked":
        wire, _ = draw(chunkedBody(clean, lineEnd))
        field = b"Transfer-Encoding: chunked"
    elif framing == "length":
        wire = draw(mostly(st.binary(min_size=1, max_size=24), st.just(b""), 6))
        field = b"Content-Length: %d" % len(wire)
    else:
        return head, draw(st.binary(max_size=24)) if framing == "close" else b""
    return insertField(head, draw(st.integers(0, len(head))), field + lineEnd), wire


@st.composite
def connectionOptions(draw, head: List[bytes], lineEnd: bytes) -> List[bytes]:
    """
    C{head}, in a third of the draws with a Connection field added at a
    random place: what it names must go, and no more than that.
    """
    if draw(st.integers(0, 2)):
        return head
    field = draw(st.sampled_from([b"Connection: ", b"Proxy-Connection: "])) + draw(st.sampled_from(_OPTIONS))
    return insertField(head, draw(st.integers(0, len(head))), field + lineEnd)


@st.composite
def requestLines(draw, targets: st.SearchStrategy, clean: bool, lineEnd: bytes) -> bytes:
    methods = st.sampled_from([b"GET", b"HEAD", b"POST", b"PUT", b"PATCH", b"DELETE", b"OPTIONS", b"TRACE"])
    versions = [b"HTTP/1.1"] * 3 + [b"HTTP/1.0"]
    space = st.just(b" ")
    if not clean:
        methods = st.one_of(methods, st.sampled_from([b"get", b"G ET", b"GET\x00", b""]), tokens)
        versions += [b"HTTP/1.2", b"HTTP/2.0", b"http/1.1", b"HTTP/1.10", b"HTTP/1.1 "]
        space = st.sampled_from([b" "] * 10 + [b"  ", b"\t"])
    return (draw(methods) + draw(space) + draw(targets) + draw(space) + draw(st.sampled_from(versions))
            + (lineEnd if clean else draw(lineEnds)))


originTargets = mostly(
    st.tuples(st.just(b"/"), bytesFrom(VISIBLE, 0, 10)).map(b"".join),
    st.one_of(
        st.sampled_from([b"*", b"/", b"http://origin.test/p?q=1", b"/a b", b"/\x00", b"/\x80\xff", b""]),
        bytesFrom(VISIBLE + NASTY, 1, 8),
    ),
)

# What a forward proxy accepts: absolute URLs, to hosts the in-memory
# resolver answers for (and some it refuses to reach).
absoluteTargets = mostly(
    st.tuples(
        st.sampled_from([b"http://", b"HTTP://"]),
        mostly(st.sampled_from([b"origin.test", b"127.0.0.1", b"127.0.0.1:8080", b"Origin.Test:80"]),
               st.sampled_from([b"10.0.0.1", b"origin.test:0", b"origin.test:99999", b"a_b", b"",
                                b"user@origin.test"])),
        st.sampled_from([b"", b"/", b"/p", b"/p?q=1", b"?q", b"/p#f", b"/%00"]),
        bytesFrom(VISIBLE, 0, 6),
    ).map(b"".join),
    originTargets,
)


def shape(draw):
    """
    Whether a message is drawn clean (valid syntax) or not, and the line
    end a clean one uses throughout.
    """
    clean = draw(st.integers(0, 9)) < 8
    return clean, draw(st.sampled_from([b"\r\n"] * 5 + [b"\n"])) if clean else b"\r\n"


@st.composite
def requests(draw, targets: st.SearchStrategy = originTargets) -> bytes:
    """
    One request: a request line, fields (mostly with Host), and a body
    framed by Content-Length, chunked or nothing, announced where a field
    says so (alongside whatever framing fields the random ones add).
    """
    clean, lineEnd = shape(draw)
    line = draw(requestLines(targets, clean, lineEnd))
    head = draw(fields(clean, lineEnd))
    if draw(st.integers(0, 9)) < 9:
        head = insertField(head, draw(st.integers(0, len(head))), b"Host: origin.test" + lineEnd)
    head, wire = draw(body(draw(connectionOptions(head, lineEnd)), clean, lineEnd))
    return line + b"".join(head) + (lineEnd if clean else draw(lineEnds)) + wire


@st.composite
def responses(draw) -> bytes:
    """
    One response, perhaps after interim ones: a status line, fields and a
    body framed by Content-Length, chunked, or the end of the connection.
    """
    clean, lineEnd = shape(draw)
    interim = draw(st.lists(st.sampled_from([b"HTTP/1.1 100 Continue\r\n\r\n", b"HTTP/1.1 103 Early Hints\r\n"
                                             b"Link: </a>\r\n\r\n", b"HTTP/1.1 102\r\n\r\n"]), max_size=2))
    versions = [b"HTTP/1.1"] * 3 + [b"HTTP/1.0"]
    statuses = mostly(st.sampled_from([b"200", b"201", b"204", b"206", b"301", b"304", b"404", b"500", b"101"]),
                      # Three digits, so they parse; not all of them are status codes.
                      st.sampled_from([b"000", b"099", b"600", b"999"]), 9)
    reasons = [b" OK", b"", b" ", b" Fine\tThanks", b" \x80\xff"]
    if not clean:
        versions += [b"HTTP/2.0", b"http/1.1", b"HTTP/1"]
        statuses = st.one_of(statuses, st.integers(0, 999).map(lambda n: b"%03d" % n),
                             st.sampled_from([b"000", b"099", b"20", b"2000", b"abc", b" 200"]))
        reasons += [b" A\x00", b" A\rB"]
    statusLine = (draw(st.sampled_from(versions)) + b" " + draw(statuses) + draw(st.sampled_from(reasons))
                  + (lineEnd if clean else draw(lineEnds)))
    head = draw(connectionOptions(draw(fields(clean, lineEnd)), lineEnd))
    head, wire = draw(body(head, clean, lineEnd, "close"))
    return b"".join(interim) + statusLine + b"".join(head) + (lineEnd if clean else draw(lineEnds)) + wire


@st.composite
def mutated(draw, base: st.SearchStrategy) -> bytes:
    """
    C{base}'s bytes with a few flipped, inserted or deleted.
    """
    data = bytearray(draw(base))
    for _ in range(draw(st.integers(1, 3))):
        where = draw(st.integers(0, len(data)))
        kind = draw(st.integers(0, 2))
        if kind == 0 and where < len(data):
            data[where] = draw(st.sampled_from(list(NASTY) + [0x30, 0x41]))
        elif kind == 1:
            data[where:where] = draw(bytesFrom(NASTY + b"0aA", 1, 3))
        else:
            del data[where:where + draw(st.integers(1, 4))]
    return bytes(data)


@st.composite
def requestStreams(draw, targets: st.SearchStrategy = originTargets) -> bytes:
    """
    What a client might send on one connection: pipelined requests (maybe
    after empty lines, maybe with a tail), mutations of them, or noise.
    """
    kind = draw(st.integers(0, 9))
    if kind == 9:
        return draw(st.binary(max_size=80))
    messages = draw(st.lists(requests(targets), min_size=1, max_size=3))
    stream = draw(st.sampled_from([b""] * 6 + [b"\r\n", b"\n", b"\r\n\r\n"])) + b"".join(messages)
    if draw(st.integers(0, 4)) == 0:
        stream += draw(st.sampled_from([b"\r\n", b"G", b"GET / HTTP/1.1\r\n", b"\x00"]))
    if kind >= 7:
        return draw(mutated(st.just(stream)))
    return stream


@st.composite
def responseStreams(draw) -> bytes:
    kind = draw(st.integers(0, 9))
    if kind == 9:
        return draw(st.binary(max_size=60))
    if kind >= 7:
        return draw(mutated(responses()))
    return draw(responses())


# Where a stream is cut into TCP segments, as offsets taken modulo its
# length: independent of the stream, so explicit examples can name them.
cuts = st.lists(st.integers(1, 1 << 16), max_size=6)


def segmented(data: bytes, offsets: List[int]) -> List[bytes]:
    """
    C{data} cut at C{offsets} (modulo its length) into segments, none
    empty: a transport never delivers nothing.
    """
    points = sorted({offset % len(data) for offset in offsets if len(data) > 1} - {0})
    return [data[start:end] for start, end in zip([0] + points, points + [len(data)]) if start < end]
