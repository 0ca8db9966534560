"""Fixtures shared by the unit tests of the deployment manifests."""

from __future__ import annotations

import copy

import pytest

from streamguard.deploy.manifests.render import OVERLAYS, render_overlay


@pytest.fixture(scope="module")
def rendered():
    """Every overlay rendered once per module (kustomize-equivalent, in Python)."""
    return {name: render_overlay(name) for name in OVERLAYS}


@pytest.fixture
def prod(rendered):
    """A private copy of the prod overlay, for tests that modify it."""
    return copy.deepcopy(rendered["prod"])
