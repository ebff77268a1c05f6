"""Our encoder against transformers' PyTorch XLM-R and BERT, same weights."""

import json

import jax
import numpy as np
import pytest
import torch
import transformers
from flax import nnx
from safetensors import numpy as safetensors_numpy

from data_pipeline import tokenization
from hybrid_jax import config as config_lib
from hybrid_jax import embedding
from hybrid_jax import pretrained
from hybrid_jax import sharding

TINY = dict(vocab_size=300, hidden_size=32, num_hidden_layers=2,
            num_attention_heads=4, intermediate_size=64,
            max_position_embeddings=40, pad_token_id=1)
LENGTHS = (12, 7, 3, 12, 2)  # Padded batch: different true lengths.


def _save_tiny(kind: str, directory, safe: bool = True):
  torch.manual_seed(0)
  if kind == "xlmr":
    cfg = transformers.XLMRobertaConfig(**TINY, layer_norm_eps=1e-5)
    model = transformers.XLMRobertaModel(cfg, add_pooling_layer=True)
  else:
    cfg = transformers.BertConfig(**TINY, type_vocab_size=2)
    model = transformers.BertModel(cfg, add_pooling_layer=True)
  # Non-trivial LayerNorms and biases (fresh ones are 1 and 0).
  with torch.no_grad():
    for name, p in model.named_parameters():
      if "LayerNorm" in name or name.endswith("bias"):
        p.add_(0.1 * torch.randn_like(p))
  model.save_pretrained(directory)
  if not safe:  # The legacy pickle format (transformers 5 writes safetensors).
    (directory / "model.safetensors").unlink()
    torch.save(model.state_dict(), directory / "pytorch_model.bin")
  return model.eval()


def _batch():
  rng = np.random.default_rng(0)
  ids = np.full((len(LENGTHS), max(LENGTHS)), TINY["pad_token_id"], np.int64)
  for i, n in enumerate(LENGTHS):
    ids[i, :n] = rng.integers(4, TINY["vocab_size"], n)
    ids[i, 0], ids[i, n - 1] = 0, 2
  return ids, (ids != TINY["pad_token_id"])


@pytest.fixture(scope="module")
def mesh():
  return sharding.make_mesh(devices=jax.devices()[:1])


@pytest.fixture(scope="module", params=["xlmr", "bert"])
def checkpoint(request, tmp_path_factory):
  directory = tmp_path_factory.mktemp(request.param)
  return request.param, directory, _save_tiny(request.param, directory)


def _load(directory, mesh, **model):
  cfg = config_lib.ModelConfig(init=f"hf:{directory}", tokenizer="bytes",
                               **model)
  return pretrained.load_model(cfg, mesh, seed=0, cache_dir=directory)


@pytest.fixture(scope="module")
def load(checkpoint, mesh):
  """Loads the checkpoint with given model options, once per options."""
  cache = {}

  def get(**model):
    key = tuple(sorted(model.items()))
    if key not in cache:
      cache[key] = _load(checkpoint[1], mesh, **model)
    return cache[key]

  return get


def _torch_outputs(torch_model, ids, mask):
  with torch.no_grad():
    out = torch_model(input_ids=torch.from_numpy(ids),
                      attention_mask=torch.from_numpy(mask.astype(np.int64)))
  hidden = out.last_hidden_state.numpy()
  m = mask[..., None].astype(np.float32)
  return hidden, {"mean": (hidden * m).sum(1) / m.sum(1),
                  "cls": hidden[:, 0],
                  "pooler": out.pooler_output}


def _hidden_states(loaded, mesh, ids, mask):
  with sharding.use_mesh(mesh):
    model = nnx.merge(loaded.graphdef, loaded.params)
    return np.asarray(model.query_tower.encoder(ids.astype(np.int32), mask))


def _normalize(x):
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_hidden_states_match_pytorch(checkpoint, load, mesh):
  torch_model = checkpoint[2]
  ids, mask = _batch()
  expected, _ = _torch_outputs(torch_model, ids, mask)
  hidden = _hidden_states(load(), mesh, ids, mask)
  # Every position, padding included: positions and masks match exactly.
  np.testing.assert_allclose(hidden, expected, atol=1e-5)


@pytest.mark.parametrize("pooling", ["mean", "cls", "pooler"])
def test_pooled_embeddings_match_pytorch(checkpoint, load, mesh, pooling):
  torch_model = checkpoint[2]
  ids, mask = _batch()
  _, pooled = _torch_outputs(torch_model, ids, mask)
  loaded = load(pooling=pooling)
  tokens = tokenization.TokenArrays(
      ids=ids.astype(np.int32), lengths=mask.sum(1).astype(np.int32))
  for tower in ("query", "passage"):
    ours = embedding.embed_token_arrays(loaded, mesh, tokens, tower)
    np.testing.assert_allclose(ours, _normalize(np.asarray(pooled[pooling])),
                               atol=1e-5)


@pytest.mark.parametrize("options", [
    dict(), dict(projection_dim=8), dict(init="random", projection_dim=8)])
def test_separate_towers_start_from_the_same_weights(checkpoint, mesh,
                                                     options):
  model = config_lib.ModelConfig(
      **{"init": f"hf:{checkpoint[1]}", "tokenizer": "bytes", "size": "tiny",
         "separate_towers": True, **options})
  loaded = pretrained.load_model(model, mesh, seed=0, cache_dir=None)
  q = nnx.to_flat_state(loaded.params["query_tower"])
  p = dict(nnx.to_flat_state(loaded.params["passage_tower"]))
  assert len(q) == len(p)
  for path, leaf in q:
    np.testing.assert_array_equal(leaf[...], p[path][...])


def test_pytorch_bin_checkpoint_loads(tmp_path, mesh):
  torch_model = _save_tiny("xlmr", tmp_path, safe=False)
  assert (tmp_path / "pytorch_model.bin").is_file()
  ids, mask = _batch()
  expected, _ = _torch_outputs(torch_model, ids, mask)
  hidden = _hidden_states(_load(tmp_path, mesh), mesh, ids, mask)
  np.testing.assert_allclose(hidden, expected, atol=1e-5)


def test_task_model_checkpoint_loads_its_encoder(tmp_path, mesh):
  # Hub checkpoints such as xlm-roberta-large are XLMRobertaForMaskedLM:
  # "roberta."-prefixed names plus an LM head that we skip.
  torch.manual_seed(0)
  cfg = transformers.XLMRobertaConfig(**TINY, layer_norm_eps=1e-5)
  masked_lm = transformers.XLMRobertaForMaskedLM(cfg)
  masked_lm.save_pretrained(tmp_path)
  ids, mask = _batch()
  expected, _ = _torch_outputs(masked_lm.roberta.eval(), ids, mask)
  hidden = _hidden_states(_load(tmp_path, mesh), mesh, ids, mask)
  np.testing.assert_allclose(hidden, expected, atol=1e-5)


def test_vocabulary_is_padded_with_rows_the_tokenizer_never_produces(
    checkpoint, load):
  torch_model = checkpoint[2]
  loaded = load()
  word = np.asarray(loaded.params["query_tower"]["encoder"]["embeddings"]
                    ["word"][...])
  assert word.shape[0] % 128 == 0 and word.shape[0] >= TINY["vocab_size"]
  np.testing.assert_array_equal(
      word[:TINY["vocab_size"]],
      torch_model.embeddings.word_embeddings.weight.detach().numpy())
  assert not word[TINY["vocab_size"]:].any()


# --- Bad checkpoints ---------------------------------------------------------


@pytest.fixture
def broken(tmp_path):
  _save_tiny("bert", tmp_path)
  return tmp_path


def _edit_config(directory, **changes):
  file = directory / "config.json"
  file.write_text(json.dumps({**json.loads(file.read_text()), **changes}))


def _edit_tensors(directory, edit):
  file = str(directory / "model.safetensors")
  tensors = safetensors_numpy.load_file(file)
  edit(tensors)
  safetensors_numpy.save_file(tensors, file)


def test_missing_tensor_is_named(broken, mesh):
  _edit_tensors(broken,
                lambda t: t.pop("encoder.layer.1.output.dense.weight"))
  with pytest.raises(ValueError, match=r"missing \['encoder.layer.1.output"):
    _load(broken, mesh)


def test_wrong_shape_is_named(broken, mesh):
  _edit_config(broken, intermediate_size=48)
  with pytest.raises(ValueError, match=r"wrong shape \['encoder.layer.0"):
    _load(broken, mesh)


def test_unexpected_tensor_is_named(broken, mesh):
  _edit_tensors(broken, lambda t: t.update({
      "encoder.layer.2.output.dense.weight": np.zeros((2, 2), np.float32)}))
  with pytest.raises(ValueError, match=r"unexpected \['encoder.layer.2"):
    _load(broken, mesh)


def test_vocabulary_size_mismatch_is_named(broken, mesh):
  _edit_config(broken, vocab_size=TINY["vocab_size"] + 1)
  with pytest.raises(ValueError, match=r"embeddings.word_embeddings.weight "
                     r"\(300, 32\): 300 rows, config says 301"):
    _load(broken, mesh)


def test_incomplete_config_is_named(broken, mesh):
  file = broken / "config.json"
  c = json.loads(file.read_text())
  del c["layer_norm_eps"]
  file.write_text(json.dumps(c))
  with pytest.raises(ValueError, match=r"config.json lacks \['layer_norm_eps"):
    _load(broken, mesh)
  _edit_config(broken, layer_norm_eps=1e-12, hidden_act="swish")
  with pytest.raises(ValueError, match=r"config.json: activation 'swish'"):
    _load(broken, mesh)


def test_pooler_pooling_needs_a_pooler(tmp_path, mesh):
  transformers.XLMRobertaForMaskedLM(transformers.XLMRobertaConfig(
      **TINY)).save_pretrained(tmp_path)
  with pytest.raises(ValueError, match="has no pooler.*'cls' or 'mean'"):
    _load(tmp_path, mesh, pooling="pooler")


def test_unknown_architecture(broken, mesh):
  _edit_config(broken, model_type="gpt2")
  with pytest.raises(ValueError, match="unknown architecture.*gpt2"):
    _load(broken, mesh)


def test_corrupt_safetensors(broken, mesh):
  file = broken / "model.safetensors"
  file.write_bytes(file.read_bytes()[:1000])
  with pytest.raises(ValueError, match="corrupt or truncated"):
    _load(broken, mesh)


def test_missing_directory_and_unreachable_hub(tmp_path, mesh):
  # conftest sets HF_HUB_OFFLINE: the hub is unreachable in tests.
  with pytest.raises(FileNotFoundError, match="is not a directory"):
    _load(tmp_path / "nowhere", mesh)
  with pytest.raises(FileNotFoundError, match="hub could not provide it"):
    _load("nobody/no-such-model", mesh)
