"""Atomic writes: the target holds the old content or the new, never a part."""
import os

import pytest

from tfvae import io


def test_atomic_write_replaces_a_file_and_leaves_nothing_else(tmp_path):
    target = tmp_path / "a.json"
    target.write_text("old")
    io.atomic_write_text(str(target), "new")
    assert target.read_text() == "new" and os.listdir(tmp_path) == ["a.json"]


def test_a_crash_inside_the_block_keeps_the_old_file(tmp_path):
    target = tmp_path / "a.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with io.atomic_path(str(target)) as tmp:
            with open(tmp, "w") as f:
                f.write("half")
            raise RuntimeError("crash")
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["a.txt"]


def test_a_failed_final_rename_restores_the_old_directory(tmp_path, monkeypatch):
    target = tmp_path / "export"
    target.mkdir()
    (target / "saved_model.pb").write_text("old model")

    def failing_replace(src, dst):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(io.os, "replace", failing_replace)
    with pytest.raises(OSError, match="simulated"):
        with io.atomic_path(str(target)) as tmp:
            os.makedirs(tmp)
            with open(os.path.join(tmp, "saved_model.pb"), "w") as f:
                f.write("new model")
    assert (target / "saved_model.pb").read_text() == "old model"
    assert os.listdir(tmp_path) == ["export"]
