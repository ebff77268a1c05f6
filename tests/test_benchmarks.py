"""The benchmark tools: their timing harness, reference searches, and the
accelerator benchmark run small on the CPU. (Tools that define flags the
entry point also defines, such as --config, are only run as subprocesses.)"""

import functools
import operator
import re
import sys
import time
import types

import jax
import numpy as np
import pytest

from conftest import REPO
from data_pipeline import tokenization
from hybrid_jax import embedding
from hybrid_jax import sharding
from test_tools import _run

sys.path.insert(0, str(REPO / "tools"))
import alternate  # pylint: disable=g-import-not-at-top,wrong-import-position
import bench_retrieval  # pylint: disable=g-import-not-at-top,wrong-import-position


def sleeper(seconds: float):
  """A maker whose call sleeps `seconds` (builtins only: the worker process
  need not import this module)."""
  return functools.partial(functools.partial, time.sleep, seconds)


def test_alternate_times_each_side_in_its_own_process():
  seconds = alternate.median_seconds(
      {"short": sleeper(0.02), "long": sleeper(0.2)}, rounds=3, pause=0.0)
  assert list(seconds) == ["short", "long"]
  assert 0.02 <= seconds["short"] < 0.15 and 0.2 <= seconds["long"] < 0.4


def filler(megabytes: int):
  """A maker whose call fills fresh memory: 256 pages of 4 KiB per MB."""
  return functools.partial(functools.partial, operator.mul, b"\x01",
                           megabytes << 20)


def test_alternate_counts_each_side_s_page_faults():
  costs = alternate.median_costs(
      {"none": filler(0), "64 MB": filler(64)}, rounds=3,
      pause=0.0)
  assert costs["none"]["minor_faults"] < 100
  assert 64 * 256 * 0.9 < costs["64 MB"]["minor_faults"] < 64 * 256 * 1.5


def test_framework_ratios_compare_each_dtype_and_the_float32_reference(
    capsys):
  alternate.print_framework_ratios(
      {"JAX float32": 4.0, "PyTorch float32": 5.0, "JAX bfloat16": 3.0,
       "PyTorch bfloat16": 2.0}, ["float32", "bfloat16"])
  assert capsys.readouterr().out == (
      "float32: JAX / PyTorch = 0.80\n"
      "bfloat16: JAX / PyTorch = 1.50; JAX / PyTorch float32 = 0.60\n")
  alternate.print_framework_ratios(
      {"JAX bfloat16": 3.0, "PyTorch bfloat16": 2.0}, ["bfloat16"])
  assert capsys.readouterr().out == "bfloat16: JAX / PyTorch = 1.50\n"


def test_alternate_names_a_side_that_fails_to_start():
  broken = functools.partial(int, "not a number")  # The maker raises.
  with pytest.raises(RuntimeError, match="The broken benchmark process "
                     "failed to start"):
    alternate.median_seconds({"fine": sleeper(0.0), "broken": broken},
                             rounds=1, pause=0.0)


def test_exact_top_k_references_agree_with_a_full_sort():
  rng = np.random.default_rng(1)
  centres = rng.normal(size=(5, 16)).astype(np.float32)
  candidates = bench_retrieval.clustered(rng, 500, centres, 0.3)
  queries = bench_retrieval.clustered(rng, 37, centres, 0.3)
  np.testing.assert_allclose(np.linalg.norm(candidates, axis=1), 1, rtol=1e-6)
  truth = np.argsort(-(queries @ candidates.T), axis=1)[:, :bench_retrieval.K]
  np.testing.assert_array_equal(
      bench_retrieval.numpy_exact(queries, candidates, chunk=8), truth)
  np.testing.assert_array_equal(
      bench_retrieval.jax_exact_fn(candidates, chunk=8)(queries), truth)
  assert bench_retrieval.recall(truth, truth) == 1.0
  assert bench_retrieval.recall(truth[:, ::-1], truth) == 1.0  # A set.
  assert bench_retrieval.recall(np.full_like(truth, -1), truth) == 0.0


def test_padded_token_count_is_what_encoding_computes(monkeypatch):
  # Longest first, batches of 2: widths 16 (17 capped at 16) and 8 (3 -> 8).
  assert embedding.padded_token_count(np.array([3, 17, 9, 1]), 2, 16) == 48
  # A last, partial batch is computed in full.
  assert embedding.padded_token_count(np.array([5, 5, 5]), 2, 64) == 32
  shapes = []

  def fake_encoder(graphdef, tower, rows):
    del graphdef, tower
    def encode(params, ids, mask):
      del params, mask
      shapes.append(ids.shape)
      return jax.device_put(np.zeros((ids.shape[0], 4), np.float32), rows)
    return encode

  monkeypatch.setattr(embedding, "_jitted_encoder", fake_encoder)
  lengths = np.random.default_rng(0).integers(1, 40, 53)
  tokens = tokenization.pack([[7] * n for n in lengths], 40, 0)
  model = types.SimpleNamespace(
      tokenizer=types.SimpleNamespace(pad_id=0), graphdef=None, params=None,
      config=types.SimpleNamespace(embedding_dim=4))
  embedding.embed_token_arrays(model, sharding.make_mesh(), tokens, "query",
                               batch_size=8)
  assert sum(b * w for b, w in shapes) == embedding.padded_token_count(
      lengths, 8, 40)


def test_retrieval_benchmark_prints_its_table():
  out = _run("tools/bench_retrieval.py", "--num_candidates=3000",
             "--num_clusters=20", "--num_queries=100", "--num_leaves=50",
             "--leaves_to_search=0.1,1.0", "--reorder=100", "--rounds=1")
  assert out.returncode == 0, out.stderr
  rows = dict(re.findall(r"^(exact \w+|scann .+?)\s{2,}([\d.]+)\s", out.stdout,
                         re.M))
  assert rows["exact numpy"] == rows["exact jax"] == "1.0000"
  # Every leaf searched, every candidate re-scored exactly: exact results.
  assert float(rows["scann 50 leaves, 1.0 searched, reorder 100"]) > 0.99


def test_gpu_benchmark_runs_small_on_the_cpu():
  out = _run("tools/bench_gpu.py", "--size=tiny", "--steps=2",
             "--batch_size=8", "--query_length=16", "--passage_length=32",
             "--encode_batch=16", "--encode_calls=2")
  assert out.returncode == 0, out.stderr
  assert re.search(r"^training step\s+[\d.]+\s+[\d,]+", out.stdout, re.M)
  assert re.search(r"^passage encoding\s+[\d.]+\s+[\d,]+", out.stdout, re.M)
