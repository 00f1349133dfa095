"""
The "blockpaths" filter: refuses an admin area and files a deployment may
have left in a document root.

This module is the filter's configuration: for other patterns, copy it into
a twisted/plugins/ folder of your own and give the copy another name.
"""

from blockpaths import BlockPaths

blockpaths = BlockPaths(
    "blockpaths",
    [
        r"^/admin(/|$)",
        r"/\.(git|svn|hg|env)(/|$)",
    ],
)
