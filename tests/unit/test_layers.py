"""
The architecture, checked: every module of dualproxy sits in a layer, imports
only from its own layer or lower ones, never in a circle, and touches no other
object's private attributes.  docs/architecture.md draws the same layers.
"""

from __future__ import annotations

import ast
from typing import Dict, Iterator, List, Set, Tuple

from twisted.trial.unittest import SynchronousTestCase

from .sources import ADAPTER, modules

#: Lowest first; a module belongs to the first entry naming it or a package above it.
LAYERS: Tuple[Tuple[str, ...], ...] = (
    ("dualproxy", "dualproxy.http", "dualproxy.interfaces", "dualproxy.settings", "dualproxy.plugins",
     "dualproxy.twistedcompat", "dualproxy.proxyprotocol", "dualproxy.clienthello"),
    ("dualproxy.core",),
    ("dualproxy.tls", "dualproxy.listeners", "dualproxy.metrics", "dualproxy.accesslog", "dualproxy.redis"),
    ("dualproxy.relay",),
    ("dualproxy.server", "dualproxy.interception", "dualproxy.routing", "dualproxy.policy", "dualproxy.filters", "dualproxy.cache",
     "dualproxy.admin", "dualproxy.acme"),
    ("dualproxy.config", "dualproxy.prestart"),
    ("dualproxy.service", "dualproxy.proxymode"),
    ("dualproxy.forward", "dualproxy.reverse", "dualproxy.socks"),
    ("dualproxy.tap", "dualproxy.workers", "dualproxy.worker"),
)


def imports(name: str, path: str, known: Set[str]) -> Set[str]:
    """
    The package's modules C{name} imports, at the top or inside functions.
    """
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    package = name if path.endswith("__init__.py") else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([node.module] if node.module else []))
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                found.add(candidate if candidate in known else base)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {module for module in found if module in known and module != name}


def layerOf(name: str) -> int:
    matches = [(len(prefix), index) for index, layer in enumerate(LAYERS) for prefix in layer
               if name == prefix or name.startswith(prefix + ".")]
    if not matches:
        raise LookupError(name)
    return max(matches)[1]


def cycles(edges: Dict[str, Set[str]]) -> List[List[str]]:
    """
    The import circles: strongly connected components of more than one module.
    """
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    found = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in edges[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def foreignPrivates(path: str) -> Iterator[Tuple[int, str]]:
    """
    Uses of a private attribute of something other than C{self}, C{cls},
    C{super()} or a name the same module defines it for.
    """
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    own = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            own.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store) and _isSelf(node.value):
            own.add(node.attr)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            own.add(node.id)
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute):
            continue
        attribute = node.attr
        if not attribute.startswith("_") or attribute.startswith("__") or attribute in own:
            continue
        if not _isSelf(node.value):
            yield node.lineno, attribute


def _isSelf(node: ast.expr) -> bool:
    if isinstance(node, ast.Name):
        return node.id in ("self", "cls")
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "super"


class LayerTests(SynchronousTestCase):
    def setUp(self):
        self.modules = modules()
        known = set(self.modules)
        self.edges = {name: imports(name, path, known) for name, path in self.modules.items()}

    def test_everyModuleHasALayer(self):
        unplaced = []
        for name in self.modules:
            try:
                layerOf(name)
            except LookupError:
                unplaced.append(name)
        self.assertEqual(unplaced, [])

    def test_noImportCircle(self):
        self.assertEqual(cycles(self.edges), [])

    def test_noImportFromAHigherLayer(self):
        upward = sorted(f"{source} -> {target}" for source, targets in self.edges.items() for target in targets
                        if layerOf(target) > layerOf(source))
        self.assertEqual(upward, [])

    def test_noForeignPrivateAttributes(self):
        found = [f"{name}:{line} .{attribute}" for name, path in sorted(self.modules.items()) if name != ADAPTER
                 for line, attribute in foreignPrivates(path)]
        self.assertEqual(found, [])


class CheckerTests(SynchronousTestCase):
    """
    The checks above would catch what they are for.
    """

    def test_cycleFound(self):
        self.assertEqual(cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}), [["a", "b", "c"]])

    def test_layerOfTheLongestPrefix(self):
        self.assertEqual(layerOf("dualproxy.relay.client"), 3)
        self.assertEqual(layerOf("dualproxy"), 0)
        self.assertRaises(LookupError, layerOf, "dualproxyx")

    def test_foreignPrivateFound(self):
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("def f(transport, self):\n    self._mine = transport._theirs\n    transport._set = 1\n"
                    "    return self._mine\n")
        self.assertEqual(list(foreignPrivates(path)), [(2, "_theirs"), (3, "_set")])
