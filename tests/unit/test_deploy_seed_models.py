"""Seeding the shared model registry from the image's copy (streamguard.deploy.pod.seed_models)."""

from __future__ import annotations

import pytest

from streamguard.deploy.pod.seed_models import seed_registry


@pytest.fixture
def baked(tmp_path):
    source = tmp_path / "image-registry"
    (source / "v0001").mkdir(parents=True)
    (source / "v0001" / "model.ubj").write_bytes(b"booster")
    (source / "CURRENT").write_text("v0001\n")
    return source


def files(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_an_absent_registry_is_seeded(baked, tmp_path):
    target = tmp_path / "volume" / "registry"
    assert seed_registry(baked, target) is True
    assert files(target) == ["CURRENT", "v0001", "v0001/model.ubj"]
    assert [p.name for p in target.parent.iterdir()] == ["registry"]  # no staging folder left


def test_an_empty_mount_point_is_seeded(baked, tmp_path):
    target = tmp_path / "registry"
    target.mkdir()
    assert seed_registry(baked, target) is True
    assert (target / "CURRENT").read_text() == "v0001\n"


def test_a_registry_in_use_is_never_touched(baked, tmp_path):
    target = tmp_path / "registry"
    (target / "v0007").mkdir(parents=True)
    (target / "CURRENT").write_text("v0007\n")
    assert seed_registry(baked, target) is False
    assert files(target) == ["CURRENT", "v0007"]


@pytest.mark.parametrize("make_source", [lambda p: None, lambda p: p.mkdir()])
def test_an_image_without_a_model_is_an_error(tmp_path, make_source):
    source = tmp_path / "image-registry"
    make_source(source)
    with pytest.raises(FileNotFoundError, match="was the image built with a model"):
        seed_registry(source, tmp_path / "registry")
