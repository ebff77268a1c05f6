"""Meshes, logical-axis shardings, and sharded execution on 8 CPU devices."""

import re

import jax
import numpy as np
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from data_pipeline import tokenization
from hybrid_jax import config as config_lib
from hybrid_jax import embedding
from hybrid_jax import pretrained
from hybrid_jax import sharding
from hybrid_jax.model import dual_encoder
from hybrid_jax.model import encoder

XLMR_VOCAB = 250_002


def _large():
  return dual_encoder.DualEncoderConfig(
      encoder.sized_config("large", "xlmr", XLMR_VOCAB, pad_id=1))


def test_eight_fake_devices():
  assert jax.device_count() == 8


@pytest.mark.parametrize("mesh_config, fsdp", [
    (sharding.MeshConfig(data=2, fsdp=4), 4),
    (sharding.MeshConfig(data=1, fsdp=8), 8),
])
def test_large_abstract_init_shapes_and_shardings(mesh_config, fsdp):
  live = len(jax.live_arrays())
  mesh = sharding.make_mesh(mesh_config)
  _, state = dual_encoder.abstract_state(_large(), mesh)
  tower = state["query_tower"]["encoder"]
  layer = tower["layers"][23]
  expected = {
      "word": (tower["embeddings"]["word"], (250_112, 1024),
               P("tensor", "fsdp")),
      "position": (tower["embeddings"]["position"], (514, 1024),
                   P(None, "fsdp")),
      "query": (layer["attention"]["query"]["kernel"], (1024, 16, 64),
                P("fsdp", "tensor", None)),
      "attention out": (layer["attention"]["output"]["kernel"],
                        (16, 64, 1024), P("tensor", None, "fsdp")),
      "mlp in": (layer["mlp_in"]["kernel"], (1024, 4096), P("fsdp", "tensor")),
      "mlp out": (layer["mlp_out"]["kernel"], (4096, 1024),
                  P("tensor", "fsdp")),
      "norm": (layer["mlp_norm"]["scale"], (1024,), P(None)),
  }
  for name, (param, shape, spec) in expected.items():
    leaf = param.get_value()
    assert isinstance(leaf, jax.ShapeDtypeStruct), name
    assert leaf.shape == shape, name
    assert leaf.sharding.spec == spec, name
    assert leaf.sharding.mesh.shape == {"data": 8 // fsdp, "fsdp": fsdp,
                                        "tensor": 1}
  # The word table splits evenly: each device holds 1/fsdp of its columns.
  word = tower["embeddings"]["word"].get_value()
  assert word.sharding.shard_shape(word.shape) == (250_112, 1024 // fsdp)
  num_params = sum(np.prod(x.shape) for x in jax.tree.leaves(state))
  # XLMRobertaModel-large without its pooler, plus 110 padded vocab rows.
  assert num_params == 558_840_832 + 110 * 1024
  assert len(jax.live_arrays()) == live  # Nothing was allocated.


def test_mesh_errors_name_the_fix():
  with pytest.raises(ValueError, match="at most one -1"):
    sharding.MeshConfig(data=-1, fsdp=-1)
  with pytest.raises(ValueError, match="not a multiple of 3"):
    sharding.make_mesh(sharding.MeshConfig(data=-1, fsdp=3))
  with pytest.raises(ValueError, match="needs 4 devices, but 8"):
    sharding.make_mesh(sharding.MeshConfig(data=2, fsdp=2))
  # e5-small's 12 heads do not split over 8 tensor shards.
  mesh = sharding.make_mesh(sharding.MeshConfig(data=1, tensor=8))
  cfg = dual_encoder.DualEncoderConfig(
      encoder.sized_config("e5-small", "bert", 1000, pad_id=1))
  with pytest.raises(ValueError, match="do not divide the mesh"):
    dual_encoder.abstract_state(cfg, mesh)


def test_sharded_forward_equals_single_device():
  model = config_lib.ModelConfig(init="random", tokenizer="bytes",
                                 size="tiny", layout="xlmr", dropout_rate=0.0)
  rng = np.random.default_rng(0)
  lengths = rng.integers(3, 40, 21).astype(np.int32)
  ids = np.full((21, 40), 1, np.int32)
  for i, n in enumerate(lengths):
    ids[i, :n] = rng.integers(4, 260, n)
  tokens = tokenization.TokenArrays(ids=ids, lengths=lengths)
  outputs = []
  for mesh in (sharding.make_mesh(devices=jax.devices()[:1]),
               sharding.make_mesh(sharding.MeshConfig(data=2, fsdp=4)),
               sharding.make_mesh(sharding.MeshConfig(data=2, tensor=4))):
    loaded = pretrained.load_model(model, mesh, seed=3, cache_dir=None)
    outputs.append(embedding.embed_token_arrays(loaded, mesh, tokens,
                                                "passage", batch_size=8))
  np.testing.assert_allclose(outputs[1], outputs[0], atol=2e-6)
  np.testing.assert_allclose(outputs[2], outputs[0], atol=2e-6)


def test_dropout_draws_each_devices_bits_on_that_device():
  # A batch split over 8 devices: each draws the random words of its own
  # elements (half as many: 16 bits each), and no device exchanges data.
  mesh = sharding.make_mesh(sharding.MeshConfig(data=8))
  rows = jax.NamedSharding(mesh, P(("data", "fsdp")))
  x = jax.device_put(np.ones((64, 128, 384), np.float32), rows)
  drop = jax.jit(lambda x, key: encoder.Dropout(0.1)(x, nnx.Rngs(dropout=key)),
                 in_shardings=(rows, None), out_shardings=rows)
  with sharding.use_mesh(mesh):
    hlo = drop.lower(x, jax.random.key(0)).compile().as_text()
  assert not re.findall(r"all-gather|all-to-all|collective-permute|all-reduce",
                        hlo)
  words = {int(n) for n in re.findall(r"u32\[(\d+)\]", hlo)}
  assert max(words) == x.size // 8 // 2
