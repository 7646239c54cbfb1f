"""Fixtures for the configfs layer without a mount (see tests/files/client.py)."""

import pytest

from tdxfs.files.tree import Tree
from tdxfs.model.profile import default_profile
from tdxfs.model.td import Platform, TrustDomain
from tests.files.client import FakeQE


@pytest.fixture
def qe():
    return FakeQE()


@pytest.fixture
def td(qe):
    return TrustDomain(Platform(bytes(range(32))), default_profile(), qe=qe)


@pytest.fixture
def tree(td):
    return Tree.for_td(td)
