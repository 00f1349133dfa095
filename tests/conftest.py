"""
Under pytest, trial's C{mktemp()} is relative to the working directory: run
each test in its own scratch directory so nothing lands in the checkout.
"""

import pytest


@pytest.fixture(autouse=True)
def _scratchDirectory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
