"""
The one plugin lookup every kind of plugin goes through.
"""

from twisted.trial.unittest import SynchronousTestCase

from dualproxy.config import ConfigError
from dualproxy.plugins import choose, construct


class ChooseTests(SynchronousTestCase):
    def test_known(self):
        plugin = object()
        self.assertIs(choose({"a": plugin}, "a", "x.kind", "kind"), plugin)

    def test_unknownListsTheKnownSorted(self):
        with self.assertRaises(ConfigError) as caught:
            choose({"zeta": 1, "alpha": 2}, "beta", "cache.store", "store")
        self.assertEqual(str(caught.exception), "cache.store: unknown store 'beta' (known: alpha, zeta)")

    def test_noneKnown(self):
        with self.assertRaises(ConfigError) as caught:
            choose({}, "x", "filters[0]", "filter")
        self.assertEqual(caught.exception.problem, "unknown filter 'x' (known: none)")


class ConstructTests(SynchronousTestCase):
    def test_optionsArePassedAsADict(self):
        self.assertEqual(construct(lambda options, resources: (options, resources), {"a": 1}, "k", "r"), ({"a": 1}, "r"))

    def test_refusedOptionIsKeyed(self):
        def factory(options, resources):
            raise ValueError("size: must be positive")

        with self.assertRaises(ConfigError) as caught:
            construct(factory, {}, "cache", None)
        self.assertEqual((caught.exception.key, caught.exception.problem), ("cache.size", "must be positive"))

