"""The command-line tools, run as a user runs them."""

import json
import os
import subprocess
import sys

from conftest import REPO
from data_pipeline import sources


def _run(*args, env=None):
  env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
  return subprocess.run([sys.executable, *args], cwd=REPO, text=True,
                        capture_output=True, env=env, timeout=300,
                        check=False)


def test_inspect_batches_reports_what_the_pipeline_yields():
  out = _run("tools/inspect_batches.py",
             "--config=configs/ratio_sweep.py:smoke",
             "--config.data.ratio=0.25", "--config.data.hard_negatives=True",
             "--num_batches=400")
  assert out.returncode == 0, out.stderr
  stats = json.loads(out.stdout)
  for key in ("num_batches", "xx_fraction", "xx_example_fraction",
              "language_counts", "pair_counts", "duplicate_ids",
              "cross_same_language", "mean_query_tokens",
              "mean_passage_tokens"):
    assert key in stats
  assert stats["num_batches"] == 400 and stats["config"]["ratio"] == 0.25
  assert stats["duplicate_ids"] == 0 and stats["cross_same_language"] == 0
  assert stats["duplicate_answers"] == 0
  assert abs(stats["xx_fraction"] - 0.25) < 3 * (0.25 * 0.75 / 400) ** 0.5
  assert stats["xx_fraction"] == stats["xx_example_fraction"]
  assert 3 < stats["mean_query_tokens"] <= 32


def test_prepare_data_copies_and_verifies_a_mirror(tmp_path):
  root = tmp_path / "data"
  out = _run("tools/prepare_data.py", f"--root={root}",
             f"--mirror={sources.resolve_root()}", "--datasets=xquad_r")
  assert out.returncode == 0, out.stderr
  info = sources.dataset_info("xquad_r")
  assert all(info.path(root, l).is_file() for l in info.languages)
  again = _run("tools/prepare_data.py", f"--root={root}", "--datasets=xquad_r")
  assert again.returncode == 0 and "fetched" not in again.stdout


def test_prepare_data_rejects_a_corrupt_mirror_and_keeps_good_files(tmp_path):
  mirror, root = tmp_path / "mirror", tmp_path / "data"
  info = sources.dataset_info("xquad_r")
  for lang in info.languages:
    src = info.path(sources.resolve_root(), lang)
    dest = info.path(mirror, lang)
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(src.read_bytes()[:-10] if lang == "th"
                     else src.read_bytes())
  out = _run("tools/prepare_data.py", f"--root={root}", f"--mirror={mirror}",
             "--datasets=xquad_r")
  assert out.returncode != 0
  assert "Checksum mismatch for xquad_r/th" in out.stderr
  assert not info.path(root, "th").exists()  # Nothing unverified lands.
  assert info.path(root, "ar").is_file()
