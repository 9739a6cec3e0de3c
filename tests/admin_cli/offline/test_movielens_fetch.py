"""Locating MovieLens 100K: explicit path, environment, local copy, then the PyPI cache."""

import zipfile
from pathlib import Path

import pytest

from banditd.admin_cli.offline import movielens_fetch


def test_explicit_path_and_environment_come_first(tmp_path, monkeypatch):
    monkeypatch.setenv("BANDITD_MOVIELENS", str(tmp_path / "from-env"))
    assert movielens_fetch.locate_ml100k(tmp_path / "given") == tmp_path / "given"
    assert movielens_fetch.locate_ml100k() == tmp_path / "from-env"


def test_cache_is_filled_from_the_wheel_once(tmp_path, monkeypatch):
    """Without a local copy the files are extracted from the recbole wheel; a second call
    uses the cache. The download itself is replaced by a wheel built here (no network)."""
    monkeypatch.delenv("BANDITD_MOVIELENS", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(movielens_fetch, "LOCAL_COPIES", (tmp_path / "absent",))
    downloads = []

    def fake_run(cmd, **kwargs):
        dest = Path(cmd[cmd.index("--dest") + 1])
        with zipfile.ZipFile(dest / "recbole-1.2.1-py3-none-any.whl", "w") as wheel:
            for name in ("ml-100k.inter", "ml-100k.item", "ml-100k.user"):
                wheel.writestr(f"recbole/dataset_example/ml-100k/{name}", f"{name}\n")
        downloads.append(cmd)

        class Done:
            returncode, stderr = 0, ""

        return Done()

    monkeypatch.setattr(movielens_fetch.subprocess, "run", fake_run)
    first = movielens_fetch.locate_ml100k()
    assert (first / "ml-100k.inter").read_text() == "ml-100k.inter\n"
    assert movielens_fetch.locate_ml100k() == first
    assert len(downloads) == 1
    assert "recbole==1.2.1" in downloads[0]


def test_failed_download_says_how_to_provide_the_data(tmp_path, monkeypatch):
    monkeypatch.delenv("BANDITD_MOVIELENS", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(movielens_fetch, "LOCAL_COPIES", ())

    class Failed:
        returncode, stderr = 1, "no network"

    monkeypatch.setattr(movielens_fetch.subprocess, "run", lambda *a, **k: Failed())
    with pytest.raises(movielens_fetch.DatasetUnavailable, match="set BANDITD_MOVIELENS"):
        movielens_fetch.locate_ml100k()
