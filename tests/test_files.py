"""Local and cloud paths, and atomic writes."""

import os

import pytest

from hybrid_jax import files


def test_cloud_uris_are_kept_and_local_paths_made_absolute(tmp_path,
                                                           monkeypatch):
  assert os.fspath(files.as_path("gs://bucket/runs/a")) == "gs://bucket/runs/a"
  monkeypatch.chdir(tmp_path)
  assert os.fspath(files.as_path("runs/a")) == str(tmp_path / "runs" / "a")
  monkeypatch.setenv("HOME", str(tmp_path))
  assert os.fspath(files.as_path("~/x")) == str(tmp_path / "x")


def test_atomic_write_replaces_the_file_or_leaves_it(tmp_path):
  path = tmp_path / "result.json"
  with files.atomic_write(path) as f:
    f.write("old")
  umask = os.umask(0)
  os.umask(umask)
  assert path.stat().st_mode & 0o777 == 0o666 & ~umask
  with pytest.raises(RuntimeError):
    with files.atomic_write(path) as f:
      f.write("half of the new")
      raise RuntimeError("killed")
  assert path.read_text() == "old"
  assert os.listdir(tmp_path) == ["result.json"]  # No temporary file left.
  with files.atomic_write(path, "wb") as f:
    f.write(b"new")
  assert path.read_bytes() == b"new" and os.listdir(tmp_path) == [path.name]
