"""The benchmark tools: their timing harness, reference searches, the
matmuls read from a jaxpr, and the accelerator benchmark run small on the
CPU. (Tools that define flags the entry point also defines, such as
--config, are only run as subprocesses.)"""

import functools
import operator
import re
import sys
import time
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import REPO
from data_pipeline import tokenization
from hybrid_jax import embedding
from hybrid_jax import sharding
from hybrid_jax.model import encoder
from test_tools import _run

sys.path.insert(0, str(REPO / "tools"))
import alternate  # pylint: disable=g-import-not-at-top,wrong-import-position
import bench_retrieval  # pylint: disable=g-import-not-at-top,wrong-import-position
import jaxpr_matmuls  # pylint: disable=g-import-not-at-top,wrong-import-position


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


@pytest.mark.parametrize("lhs_shape,rhs_shape,dimension_numbers", [
    ((3, 4), (4, 5), (((1,), (0,)), ((), ()))),  # [m, k] @ [k, n].
    ((4, 3), (4, 5), (((0,), (0,)), ((), ()))),  # A weight gradient.
    ((3, 4), (5, 4), (((1,), (1,)), ((), ()))),  # An input gradient.
    ((2, 3, 4, 5), (2, 3, 6, 5), (((3,), (3,)), ((0, 1), (0, 1)))),  # q.k
    ((2, 3, 4, 5), (2, 3, 4, 6), (((2,), (2,)), ((0, 1), (0, 1)))),
    # A batch axis not first, two axes contracted in another order.
    ((4, 2, 5), (2, 5, 4, 3), (((0, 2), (2, 1)), ((1,), (0,)))),
])
def test_a_matmul_s_einsum_and_flops_are_dot_general_s(
    lhs_shape, rhs_shape, dimension_numbers):
  rng = np.random.default_rng(0)
  lhs, rhs = rng.normal(size=lhs_shape), rng.normal(size=rhs_shape)
  matmul = jaxpr_matmuls.Matmul(lhs_shape, rhs_shape, dimension_numbers)
  np.testing.assert_allclose(
      np.einsum(jaxpr_matmuls.einsum_spec(matmul), lhs, rhs),
      jax.lax.dot_general(lhs, rhs, dimension_numbers), rtol=1e-5, atol=1e-5)
  dot = jax.jit(functools.partial(jax.lax.dot_general,
                                  dimension_numbers=dimension_numbers))
  assert matmul.flops == dot.lower(lhs, rhs).cost_analysis()["flops"]


def test_matmuls_are_read_through_jits_custom_gradients_and_scans():
  w = jnp.ones((4, 3))
  stack = jnp.ones((5, 3, 3))

  def loss(x, w):
    y = encoder.einsum("ti,io->to", x, w)  # custom_vjp: 2 in its backward.
    y = jax.jit(lambda a: a @ w.T @ w)(y)
    y, _ = jax.lax.scan(lambda c, s: (c @ s, None), y, stack)  # 5 x 1.
    return y.sum()

  forward = jaxpr_matmuls.collect(jax.make_jaxpr(loss)(jnp.ones((2, 4)),
                                                       w).jaxpr)
  assert forward == (
      [jaxpr_matmuls.Matmul((2, 4), (4, 3), (((1,), (0,)), ((), ()))),
       jaxpr_matmuls.Matmul((2, 3), (3, 4), (((1,), (0,)), ((), ()))),
       jaxpr_matmuls.Matmul((2, 4), (4, 3), (((1,), (0,)), ((), ())))]
      + [jaxpr_matmuls.Matmul((2, 3), (3, 3), (((1,), (0,)), ((), ())))] * 5)
  gradient = jaxpr_matmuls.collect(
      jax.make_jaxpr(jax.grad(loss, 1))(jnp.ones((2, 4)), w).jaxpr)
  # Backward: the scan's 5 input gradients (its stack is not differentiated),
  # an input and a weight gradient for each of the jit's 2 products, and the
  # custom einsum's 2 (its input gradient too, unused here).
  assert len(gradient) == len(forward) + 5 + 4 + 2


def test_matmuls_in_loops_or_branches_are_refused():
  def loop(x):
    return jax.lax.while_loop(lambda c: c.sum() < 10, lambda c: c @ c, x)

  def branch(x):
    return jax.lax.cond(x.sum() > 0, lambda c: c @ c, lambda c: c, x)

  with pytest.raises(ValueError, match="inside a while"):
    jaxpr_matmuls.collect(jax.make_jaxpr(loop)(jnp.eye(2)).jaxpr)
  with pytest.raises(ValueError, match="inside a cond"):
    jaxpr_matmuls.collect(jax.make_jaxpr(branch)(jnp.eye(2)).jaxpr)


def test_matmuls_other_than_float32_are_refused():
  with pytest.raises(ValueError, match="float32 ones only"):
    jaxpr_matmuls.collect(jax.make_jaxpr(jnp.matmul)(
        jnp.eye(2, dtype=jnp.bfloat16), jnp.eye(2, dtype=jnp.bfloat16)).jaxpr)


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


@pytest.mark.slow
def test_matmul_floor_counts_the_encoder_s_matmuls():
  out = _run("tools/bench_matmuls.py", "--batch_size=2", "--query_length=8",
             "--passage_length=16", "--rounds=1")
  assert out.returncode == 0, out.stderr
  counts = {f"{program} {kind}": int(count) for program, kind, count in
            re.findall(r"^(step|forward) (unbatched|batched)\s+(\d+)\s",
                       out.stdout, re.M)}
  # 12 layers: 4 attention projections and 2 MLP ones, 2 attention products
  # each forward; 2 towers (questions, passages) in the step, where every
  # projection has 2 gradient matmuls and every product 2 more, and the loss
  # 1 matmul and its 2 gradients.
  assert counts == {"step unbatched": 12 * 2 * 6 * 3 + 3,
                    "step batched": 12 * 2 * 2 * 3,
                    "forward unbatched": 12 * 6, "forward batched": 12 * 2}
  assert len(re.findall(r"^  PyTorch's whole (step|forward)", out.stdout,
                        re.M)) == 2
