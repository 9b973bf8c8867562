"""Shared fixtures. The reference data live outside the package: TFVAE_SHARED_DATA, by
default ../shared/data beside the repository (as on CI)."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.environ.get("TFVAE_SHARED_DATA", os.path.join(REPO, "..", "shared", "data"))


@pytest.fixture(scope="session")
def shared_data():
    """Path of the reference data folder; fails (not skips) when it is missing, since CI has it."""
    assert os.path.isdir(SHARED_DATA), (
        f"reference data not found at {SHARED_DATA}; set TFVAE_SHARED_DATA to the shared/data folder")
    return SHARED_DATA


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def isolated_cache(tmp_path, monkeypatch):
    """An empty download cache and no proxy: downloads can reach only 127.0.0.1. The data tests
    use it for every test (`pytestmark = pytest.mark.usefixtures("isolated_cache")`)."""
    monkeypatch.setenv("TFVAE_CACHE_DIR", str(tmp_path / "cache"))
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "*")
