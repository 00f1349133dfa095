"""
The admin dashboard in a real browser: headless Chromium loads it from a
running proxy, and both the page's text and its pixels must show the
proxy's data, not an empty or broken page.
"""

from __future__ import annotations

import os
import shutil
import struct
import zlib

from twisted.internet.defer import inlineCallbacks
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import SkipTest

from .support import CLEAN_ENV
from .test_admin import AdminTestCase, reverseConfig

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

# Flags for a browser that must not reach beyond loopback (see the env notes).
QUIET = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars", "--window-size=1000,700", "--virtual-time-budget=4000"]


def pixels(png: bytes):
    """
    The RGB triples of an 8-bit RGB or RGBA PNG, row by row.
    """
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    offset, idat = 8, b""
    while offset < len(png):
        length, kind = struct.unpack(">I4s", png[offset:offset + 8])
        data = png[offset + 8:offset + 8 + length]
        if kind == b"IHDR":
            width, height, depth, colour = struct.unpack(">IIBB", data[:10])
            assert depth == 8 and colour in (2, 6), (depth, colour)
            size = 3 if colour == 2 else 4
        elif kind == b"IDAT":
            idat += data
        offset += 12 + length
    raw = zlib.decompress(idat)
    stride = width * size
    previous = bytearray(stride)
    position = 0
    for _ in range(height):
        kind = raw[position]
        row = bytearray(raw[position + 1:position + 1 + stride])
        position += 1 + stride
        for i in range(stride):
            left = row[i - size] if i >= size else 0
            up = previous[i]
            corner = previous[i - size] if i >= size else 0
            if kind == 1:
                row[i] = (row[i] + left) & 0xFF
            elif kind == 2:
                row[i] = (row[i] + up) & 0xFF
            elif kind == 3:
                row[i] = (row[i] + (left + up) // 2) & 0xFF
            elif kind == 4:
                estimate = left + up - corner
                pa, pb, pc = abs(estimate - left), abs(estimate - up), abs(estimate - corner)
                row[i] = (row[i] + (left if pa <= pb and pa <= pc else up if pb <= pc else corner)) & 0xFF
        previous = row
        for i in range(0, stride, size):
            yield row[i], row[i + 1], row[i + 2]


def near(pixel, colour, tolerance=40) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(pixel, colour))


class DashboardTests(AdminTestCase):
    @inlineCallbacks
    def browse(self, url, *arguments):
        profile = self.mktemp()
        os.makedirs(profile)
        out, err, code = yield getProcessOutputAndValue(
            CHROMIUM, [*QUIET, f"--user-data-dir={profile}", *arguments, url], env=CLEAN_ENV, path=profile)
        self.assertEqual(code, 0, err)
        return out

    @inlineCallbacks
    def test_dashboardShowsTraffic(self):
        if CHROMIUM is None:
            raise SkipTest("chromium is not installed (.ci/run installs it)")
        a, b = self.origins("a", "b")
        proxy = self.start(reverseConfig(a, b))
        for _ in range(12):
            yield self.get(proxy.url + "/name")
        # Close the current second so the series has data to draw.
        metrics = proxy.service.metrics
        metrics._tick(metrics.clock.seconds() + 1)
        dom = (yield self.browse(proxy.admin + "/", "--dump-dom")).decode()
        self.assertIn("Pool app (round-robin)", dom)
        self.assertIn(f"http://{a.address}", dom)
        self.assertIn('class="up">up<', dom)
        self.assertIn("requests in the last second", dom)
        self.assertIn('<span style="color:#1a7f37">2xx</span>', dom, "the status chart has the 2xx series")
        self.assertIn("<path d=\"M", dom, "the charts have lines")
        shot = os.path.abspath(self.mktemp() + ".png")
        yield self.browse(proxy.admin + "/", f"--screenshot={shot}")
        with open(shot, "rb") as f:
            drawn = list(pixels(f.read()))
        blue = sum(1 for pixel in drawn if near(pixel, (0x09, 0x69, 0xDA)))
        green = sum(1 for pixel in drawn if near(pixel, (0x1A, 0x7F, 0x37)))
        background = sum(1 for pixel in drawn if near(pixel, (0xFA, 0xFA, 0xFA), 3))
        self.assertGreater(blue, 80, "the request-rate and latency lines are drawn")
        self.assertGreater(green, 50, "the healthy backends and 2xx line are drawn")
        self.assertLess(background, len(drawn) * 0.95, "the page is not blank")
