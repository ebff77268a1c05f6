"""The encoder's own behaviour: positions, dropout, dtypes, config checks."""

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from hybrid_jax import config as config_lib
from hybrid_jax import sharding
from hybrid_jax.model import dual_encoder
from hybrid_jax.model import encoder


@pytest.fixture(scope="module")
def mesh():
  return sharding.make_mesh(devices=jax.devices()[:1])


def _model(mesh, **overrides):
  cfg = dual_encoder.DualEncoderConfig(
      encoder.sized_config("tiny", "xlmr", 260, pad_id=1, **overrides))
  graphdef, params = dual_encoder.init_state(cfg, mesh, seed=0)
  return nnx.merge(graphdef, params)


def _batch():
  ids = np.array([[0, 9, 8, 7, 2], [0, 5, 2, 1, 1]], np.int32)
  return ids, ids != 1


def test_position_ids_by_hand():
  mask = np.array([[1, 1, 1, 0], [1, 1, 0, 0]], bool)
  np.testing.assert_array_equal(encoder.position_ids(mask, "xlmr", 1),
                                [[2, 3, 4, 1], [2, 3, 1, 1]])
  np.testing.assert_array_equal(encoder.position_ids(mask, "bert", 0),
                                [[0, 1, 2, 3], [0, 1, 2, 3]])


def test_dropout_only_with_rngs(mesh):
  model = _model(mesh, dropout_rate=0.5)
  ids, mask = _batch()
  with sharding.use_mesh(mesh):
    plain = [model.encode_query(ids, mask) for _ in range(2)]
    dropped = [model.encode_query(ids, mask, rngs=nnx.Rngs(dropout=k))
               for k in (0, 0, 1)]
  np.testing.assert_array_equal(plain[0], plain[1])  # Deterministic.
  np.testing.assert_array_equal(dropped[0], dropped[1])  # Same key.
  assert not np.allclose(dropped[0], dropped[2])  # Another key.
  assert not np.allclose(dropped[0], plain[0])


@pytest.mark.parametrize("rate", [0.1, 0.5])
def test_dropout_drops_at_its_rate_and_keeps_the_mean(rate):
  x = jnp.ones((1001, 999), jnp.float32)  # An odd size: bits are paired.
  y = np.asarray(encoder.Dropout(rate)(x, nnx.Rngs(dropout=3)))
  dropped = np.mean(y == 0)
  n = x.size  # Binomial: 5 standard deviations.
  assert abs(dropped - rate) < 5 * np.sqrt(rate * (1 - rate) / n)
  kept = np.unique(y[y != 0])
  np.testing.assert_allclose(kept, [2**16 / (2**16 - round(rate * 2**16))])
  assert abs(y.mean() - 1) < 5 * np.sqrt(rate / (1 - rate) / n)
  assert encoder.Dropout(rate)(x, None) is x
  flat = y.ravel() == 0  # Elements 2i and 2i + 1 share a random word.
  pairs = np.corrcoef(flat[0:-1:2], flat[1::2])[0, 1]
  assert abs(pairs) < 0.01


def test_inputs_longer_than_the_position_table_are_rejected(mesh):
  model = _model(mesh)  # XLM-R layout: 514 positions, pad_id 1.
  assert model.config.encoder.max_length == 512
  ids = np.full((1, 513), 5, np.int32)
  with sharding.use_mesh(mesh), pytest.raises(
      ValueError, match="513 tokens exceed the model's 514 positions: use a "
      "max length of at most 512"):
    model.encode_query(ids, ids > 0)


def test_runs_outside_a_mesh_too(mesh):
  model = _model(mesh)
  ids, mask = _batch()
  with sharding.use_mesh(mesh):
    inside = model.encode_query(ids, mask)
  np.testing.assert_allclose(model.encode_query(ids, mask), inside, atol=1e-6)


def test_padding_does_not_change_embeddings(mesh):
  model = _model(mesh)
  ids, mask = _batch()
  wider = np.pad(ids, ((0, 0), (0, 6)), constant_values=1)
  with sharding.use_mesh(mesh):
    short = model.encode_passage(ids, mask)
    long = model.encode_passage(wider, wider != 1)
  np.testing.assert_allclose(long, short, atol=1e-6)


def test_bfloat16_compute_stays_close_to_float32(mesh):
  ids, mask = _batch()
  with sharding.use_mesh(mesh):
    f32 = _model(mesh).encode_query(ids, mask)
    bf16 = _model(mesh, dtype="bfloat16").encode_query(ids, mask)  # Same init.
    stored = _model(mesh, param_dtype="bfloat16")
  assert bf16.dtype == jnp.float32  # Embeddings are always float32.
  np.testing.assert_allclose(bf16, f32, atol=3e-2)
  assert stored.query_tower.encoder.embeddings.word[...].dtype == jnp.bfloat16
  # bfloat16 storage, float32 compute: as float32 params of the same values.
  upcast = nnx.merge(nnx.split(_model(mesh))[0], jax.tree.map(
      lambda x: x.astype(jnp.float32), nnx.state(stored)))
  with sharding.use_mesh(mesh):
    np.testing.assert_allclose(stored.encode_query(ids, mask),
                               upcast.encode_query(ids, mask), atol=1e-6)


# The encoder's contractions: projections, attention logits, attention output;
# then a weight gradient's (operands swapped for the CPU kernels), one whose
# result is transposed, two contracted indices, and an outer product.
_SPECS = ("ti,io->to", "bhqd,bhkd->bhqk", "bhqk,bhkd->bhqd", "to,ti->io",
          "bqd,bkd->qbk", "tij,oji->ot", "ij,kl->ikjl")


def _operands(spec, dtype):
  """Random operands and output cotangent of einsum `spec`."""
  size = dict(t=6, i=5, o=4, b=2, h=3, q=4, k=5, d=6, j=3, l=2)
  keys = jax.random.split(jax.random.key(0), 3)
  names = spec.replace("->", ",").split(",")
  return [jax.random.normal(key, [size[c] for c in name]).astype(dtype)
          for key, name in zip(keys, names)]


@pytest.mark.parametrize("spec", _SPECS)
def test_einsum_gradient_is_autodiff_s_in_float32(spec):
  a, b, cotangent = _operands(spec, jnp.float32)
  ours, vjp = jax.vjp(functools.partial(encoder.einsum, spec), a, b)
  reference, reference_vjp = jax.vjp(functools.partial(jnp.einsum, spec), a, b)
  np.testing.assert_allclose(ours, reference, rtol=1e-6)
  for got, want in zip(vjp(cotangent), reference_vjp(cotangent)):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("spec", _SPECS)
def test_bfloat16_einsum_is_mixed_precision_both_ways(spec):
  a, b, cotangent = _operands(spec, jnp.bfloat16)
  out, vjp = jax.vjp(functools.partial(encoder.einsum, spec), a, b)
  grads = vjp(cotangent.astype(jnp.float32))
  # bfloat16 products are exact in float32: float32 math on the same values.
  upcast = [x.astype(jnp.float32) for x in (a, b, cotangent)]
  _, reference_vjp = jax.vjp(functools.partial(jnp.einsum, spec), *upcast[:2])
  assert out.dtype == jnp.float32
  np.testing.assert_allclose(out, jnp.einsum(spec, *upcast[:2]), rtol=1e-6,
                             atol=1e-6)
  for got, want in zip(grads, reference_vjp(upcast[2])):
    assert got.dtype == jnp.bfloat16  # Rounded once, from float32 sums.
    np.testing.assert_allclose(got.astype(jnp.float32), want, rtol=1e-2,
                               atol=1e-2)
  # Every matmul XLA gets, forward and backward, is bfloat16 -> float32.
  def forward_and_backward(a, b):
    out, vjp = jax.vjp(functools.partial(encoder.einsum, spec), a, b)
    return out, vjp(out)

  assert len(_mixed_precision_dots(jax.jit(forward_and_backward), a, b)) == 3


def _mixed_precision_dots(jitted, *args) -> list[str]:
  """The dot_generals of `jitted` lowered for `args`, each asserted to take
  bfloat16 operands and return float32, and to be in the form XLA:CPU's
  matmul kernels take (the lowering runs on one CPU device)."""
  lines = jitted.lower(*args).as_text().splitlines()
  dots = [i for i, line in enumerate(lines) if "dot_general" in line]
  for i in dots:
    assert re.search(r": \(tensor<[^>]*bf16>, tensor<[^>]*bf16>\) -> "
                     r"tensor<[^>]*f32>", lines[i]), lines[i]
    _assert_kernel_form(lines[:i], lines[i])
  return [lines[i] for i in dots]


def _assert_kernel_form(before: list[str], dot: str) -> None:
  """Asserts that StableHLO `dot` (after the lines `before`) multiplies
  [batch, m, k] by [batch, k, n], both laid out row-major."""
  operands = re.search(r"dot_general (%[\w#]+), (%[\w#]+),", dot).groups()
  for name in operands:  # Its nearest definition is in the dot's function.
    definition = next((line for line in reversed(before)
                       if line.strip().startswith(f"{name} = ")), None)
    assert definition, f"{name} is no result of a layout constraint: {dot}"
    layout = re.search(r"@LayoutConstraint.*result_layouts = "
                       r"\[dense<\[([\d, ]*)\]>", definition)
    assert layout, definition
    minor_to_major = _ints(layout.group(1))
    assert minor_to_major == sorted(minor_to_major, reverse=True), definition
  rank = re.search(r": \(tensor<([^>]*)>", dot).group(1).count("x")
  batch = re.search(r"batching_dims = \[([^\]]*)\] x \[([^\]]*)\]", dot)
  n = len(_ints(batch.group(1))) if batch else 0
  if batch:
    assert _ints(batch.group(1)) == _ints(batch.group(2)) == list(range(n))
  lhs, rhs = map(_ints, re.search(
      r"contracting_dims = \[([^\]]*)\] x \[([^\]]*)\]", dot).groups())
  assert lhs == list(range(rank - len(lhs), rank)), dot
  assert rhs == list(range(n, n + len(lhs))), dot


def _ints(text: str) -> list[int]:
  return [int(x) for x in text.split(",") if x.strip()]


def test_einsum_keeps_its_form_where_the_cpu_kernels_do_not_need_another():
  a, b, _ = _operands("ti,io->to", jnp.bfloat16)
  lower = lambda a, b: jax.jit(functools.partial(
      encoder.einsum, "ti,io->to")).lower(a, b).as_text()
  assert "LayoutConstraint" in lower(a, b)  # One CPU device, bfloat16.
  # In float32 the copies cost time and gain nothing.
  assert "LayoutConstraint" not in lower(*(x.astype(jnp.float32)
                                           for x in (a, b)))
  # Across devices a layout constraint would replicate sharded operands.
  with sharding.use_mesh(sharding.make_mesh()):
    assert jax.device_count() > 1
    assert "LayoutConstraint" not in lower(a, b)


@pytest.mark.parametrize("spec, match", [
    ("ti,io", "explicit two-operand spec"),  # No result.
    ("ti,io->t", "got 'ti,io->t'"),  # o summed within b.
    ("tt,to->o", "each index of an operand or the result once"),
    ("ti,io->tt", "each index of an operand or the result once"),
    ("ti,io->tx", "result indices each appear in an operand"),
    ("ti,io,ox->tx", "two-operand"),
])
def test_einsum_rejects_specs_it_cannot_differentiate(spec, match):
  with pytest.raises(ValueError, match=match):
    encoder.einsum(spec, jnp.ones((2, 3)), jnp.ones((3, 4)))


def test_einsum_rejects_mixed_dtypes():
  with pytest.raises(ValueError, match="float32 and bfloat16"):
    encoder.einsum("ti,io->to", jnp.ones((2, 3)),
                   jnp.ones((3, 4), jnp.bfloat16))


def test_bfloat16_gradients_follow_float32(mesh):
  ids, mask = _batch()
  direction = jax.random.normal(jax.random.key(1), (32,))

  def gradient_fn(dtype):
    graphdef, params = nnx.split(_model(mesh, dtype=dtype))
    loss = lambda p: (nnx.merge(graphdef, p).encode_query(ids, mask)
                      * direction).sum()  # No matmul of its own.
    return jax.jit(jax.grad(loss)), params

  def gradient(dtype):
    fn, params = gradient_fn(dtype)
    with sharding.use_mesh(mesh):
      grads = fn(params)
    return np.concatenate([np.ravel(g) for g in jax.tree.leaves(grads)])

  f32, bf16 = gradient("float32"), gradient("bfloat16")
  cosine = f32 @ bf16 / np.linalg.norm(f32) / np.linalg.norm(bf16)
  assert cosine > 0.99, cosine
  assert abs(np.linalg.norm(bf16) / np.linalg.norm(f32) - 1) < 0.05
  # Every projection and attention matmul of the model, in both directions.
  with sharding.use_mesh(mesh):
    dots = _mixed_precision_dots(*gradient_fn("bfloat16"))
  # 2 layers x (6 projections + 2 attention products) x (forward + 2 grads).
  assert len(dots) == 2 * 8 * 3


def test_projection_sets_the_embedding_size(mesh):
  cfg = dual_encoder.DualEncoderConfig(
      encoder.sized_config("tiny", "bert", 260, pad_id=1), pooling="cls",
      projection_dim=16)
  graphdef, params = dual_encoder.init_state(cfg, mesh, seed=0)
  ids, mask = _batch()
  with sharding.use_mesh(mesh):
    out = nnx.merge(graphdef, params).encode_query(ids, mask)
  assert out.shape == (2, 16)
  np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-6)


@pytest.mark.parametrize("kwargs, match", [
    (dict(pooling="max"), "model.pooling='max'"),
    (dict(projection_dim=-1), "projection_dim=-1"),
])
def test_bad_dual_encoder_settings(kwargs, match):
  enc = encoder.sized_config("tiny", "xlmr", 260, pad_id=1)
  with pytest.raises(ValueError, match=match):
    dual_encoder.DualEncoderConfig(enc, **kwargs)


@pytest.mark.parametrize("call, match", [
    (lambda: encoder.sized_config("huge", "xlmr", 9, 1), "model.size='huge'"),
    (lambda: encoder.sized_config("tiny", "gpt", 9, 1), "layout='gpt'"),
    (lambda: encoder.sized_config("tiny", "bert", 9, 1, dtype="float16"),
     "dtype='float16'"),
    (lambda: encoder.sized_config("tiny", "bert", 9, 1, activation="swish"),
     "activation 'swish'"),
    (lambda: config_lib.ModelConfig(dropout_rate=1.0), "dropout_rate=1.0"),
    (lambda: config_lib.ModelConfig(size="huge"), "model.size='huge'"),
    (lambda: config_lib.ModelConfig(pooling="max"), "model.pooling='max'"),
    (lambda: config_lib.ModelConfig(dtype="fp16"), "model.dtype='fp16'"),
    (lambda: config_lib.ModelConfig(init="hf"), "hub id"),
])
def test_bad_encoder_settings(call, match):
  with pytest.raises(ValueError, match=match):
    call()
