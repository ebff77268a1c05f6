"""Training: the loss, the step on several meshes, checkpoints and resume."""

import dataclasses
import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import ratio_sweep
from hybrid_jax import checkpointing
from hybrid_jax import config as config_lib
from hybrid_jax import losses
from hybrid_jax import optimizer
from hybrid_jax import pretrained
from hybrid_jax import sharding
from hybrid_jax import train
from hybrid_jax import train_state as train_state_lib


def _smoke(**overrides) -> config_lib.ExperimentConfig:
  """The smoke preset with `section.field` overrides."""
  c = ratio_sweep.get_config("smoke")
  for key, value in overrides.items():
    section, field = key.split("__")
    c[section][field] = value
  return config_lib.from_config_dict(c)


# --- The loss -------------------------------------------------------------


def _reference_loss(q, p, n, has_n, t, symmetric):
  """InfoNCE written out with loops, in float64."""
  q, p, n = (np.asarray(x, np.float64) for x in (q, p, n))
  cands = list(p) + [n[j] for j in range(len(n)) if has_n[j]]
  terms = []
  for i in range(len(q)):
    scores = np.array([q[i] @ c / t for c in cands])
    terms.append(np.log(np.exp(scores).sum()) - q[i] @ p[i] / t)
  loss = np.mean(terms)
  if symmetric:
    back = [np.log(sum(np.exp(p[i] @ q[j] / t) for j in range(len(q))))
            - p[i] @ q[i] / t for i in range(len(p))]
    loss = (loss + np.mean(back)) / 2
  return loss


def _unit(rng, shape):
  x = rng.normal(size=shape)
  return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("symmetric", [False, True])
def test_loss_against_a_numpy_reference(symmetric):
  rng = np.random.default_rng(0)
  q, p, n = _unit(rng, (4, 6)), _unit(rng, (4, 6)), _unit(rng, (4, 6))
  has_n = np.array([True, False, True, True])
  loss, stats = losses.contrastive_loss(q, p, n, has_n, temperature=0.1,
                                        symmetric=symmetric)
  np.testing.assert_allclose(
      loss, _reference_loss(q, p, n, has_n, 0.1, symmetric), rtol=1e-5)
  sims = q @ np.concatenate([p, n[has_n]]).T
  np.testing.assert_allclose(stats["positive_similarity"],
                             np.mean(np.diag(sims)), rtol=1e-5)
  off_diagonal = sims[~np.eye(4, sims.shape[1], dtype=bool)]
  np.testing.assert_allclose(stats["negative_similarity"],
                             off_diagonal.mean(), rtol=1e-5)
  np.testing.assert_allclose(stats["accuracy"],
                             np.mean(sims.argmax(1) == np.arange(4)))


def test_loss_without_hard_negatives_uses_in_batch_ones():
  rng = np.random.default_rng(1)
  q, p = _unit(rng, (3, 5)), _unit(rng, (3, 5))
  loss, _ = losses.contrastive_loss(q, p, temperature=0.05)
  np.testing.assert_allclose(
      loss, _reference_loss(q, p, p[:0], [], 0.05, False), rtol=1e-5)


# --- The step ------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_batch():
  rng = np.random.default_rng(0)
  batch = {}
  for name, length in (("query", 12), ("passage", 20), ("negative", 20)):
    lengths = rng.integers(3, length + 1, 8)
    ids = rng.integers(4, 260, (8, length)).astype(np.int32)
    mask = np.arange(length) < lengths[:, None]
    batch[f"{name}_ids"] = np.where(mask, ids, 1).astype(np.int32)
    batch[f"{name}_mask"] = mask.astype(np.int32)
  batch["has_negative"] = np.array([1, 1, 0, 1, 1, 1, 0, 1], bool)
  return batch


def _setup(mesh, cfg):
  loaded = pretrained.load_model(cfg.model, mesh, cfg.seed, cache_dir=None)
  tx = optimizer.make_optimizer(cfg.train)
  return loaded, tx, train_state_lib.create(loaded, cfg.train, tx, mesh)


def test_gradients_against_finite_differences(tiny_batch):
  cfg = _smoke(model__dropout_rate=0.0)
  mesh = sharding.make_mesh(devices=jax.devices()[:1])
  loaded, _, state = _setup(mesh, cfg)
  loss_fn = jax.jit(lambda params: train.compute_loss(
      params, state.frozen, tiny_batch, graphdef=loaded.graphdef,
      cfg=cfg.train, dropout_key=None)[0])
  with sharding.use_mesh(mesh):
    grads = jax.grad(loss_fn)(state.params)
    rng = np.random.default_rng(0)
    for _ in range(3):  # Directional derivatives along random directions.
      direction = jax.tree.map(
          lambda x: jnp.asarray(rng.normal(size=x.shape), x.dtype),
          state.params)
      eps = 1e-3
      shifted = lambda s: jax.tree.map(lambda x, d: x + s * eps * d,
                                       state.params, direction)
      numeric = (loss_fn(shifted(1)) - loss_fn(shifted(-1))) / (2 * eps)
      analytic = sum(jnp.vdot(g, d) for g, d in zip(
          jax.tree.leaves(grads), jax.tree.leaves(direction)))
      np.testing.assert_allclose(analytic, numeric, rtol=2e-2)


def _loss_and_grads(mesh_config, devices, batch):
  cfg = _smoke(train__freeze_word_embeddings=True, data__hard_negatives=True)
  mesh = sharding.make_mesh(mesh_config, devices)
  loaded, _, state = _setup(mesh, cfg)
  inputs = train.batch_shardings(cfg.data, mesh)
  loss_fn = functools.partial(
      train.compute_loss, frozen=state.frozen, graphdef=loaded.graphdef,
      cfg=cfg.train, dropout_key=jax.random.PRNGKey(7))
  with sharding.use_mesh(mesh):
    (loss, stats), grads = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(
        state.params, batch={k: jax.device_put(batch[k], s)
                             for k, s in inputs.items()})
  return jax.device_get((loss, stats, grads))


def test_loss_and_gradients_equal_on_one_and_eight_devices(tiny_batch):
  loss, stats, grads = _loss_and_grads(sharding.MeshConfig(),
                                       jax.devices()[:1], tiny_batch)
  for mesh_config in (sharding.MeshConfig(data=8),
                      sharding.MeshConfig(data=1, fsdp=8),
                      sharding.MeshConfig(data=2, fsdp=2, tensor=2)):
    other = _loss_and_grads(mesh_config, None, tiny_batch)
    np.testing.assert_allclose(other[0], loss, rtol=1e-6)
    np.testing.assert_allclose(other[1]["accuracy"], stats["accuracy"])
    # Float32 sums in another order: equal up to 1e-4 of the largest entry
    # (some true gradients are 0, e.g. of key biases, and come out ~1e-11).
    scale = max(np.abs(g).max() for g in jax.tree.leaves(grads))
    jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=1e-4,
                                   atol=1e-4 * scale), other[2], grads)


# --- Runs, checkpoints, resume --------------------------------------------


def _metrics(directory):
  return [json.loads(l) for l in (directory / "metrics.jsonl").open()]


def _final_params(directory, cfg):
  mesh = sharding.make_mesh(cfg.mesh)
  _, _, state = _setup(mesh, cfg)
  ckpt = checkpointing.Checkpoints(directory / "checkpoints", every=1, keep=9)
  restored, data = ckpt.restore(ckpt.latest_step(),
                                train_state_lib.abstract(state))
  ckpt.close()
  return jax.device_get(restored.params), data


def test_smoke_run_end_to_end(tmp_path):
  cfg = _smoke(train__num_steps=3, data__hard_negatives=True)
  result = train.run(cfg, tmp_path)
  assert result.step == 3 and np.isfinite(result.metrics["loss"])
  directory = result.directory
  assert directory.name == "ratio_0.500_seed_0"
  assert json.loads((directory / "config.json").read_text())["seed"] == 0
  assert [m["step"] for m in _metrics(directory)] == [1, 2, 3]
  assert any((directory / "events").iterdir())
  assert sorted(p.name for p in (directory / "checkpoints").iterdir()) == [
      "2", "3"]  # keep_checkpoints=2
  _, data = _final_params(directory, cfg)
  assert data == {"step": 3}
  # A finished run is not trained again.
  assert train.run(cfg, tmp_path).metrics == {}


def test_resumed_run_equals_uninterrupted_run(tmp_path, monkeypatch):
  cfg = _smoke(train__num_steps=5, train__checkpoint_every=2)
  whole = train.run(cfg, tmp_path / "whole")

  save = checkpointing.Checkpoints.save

  def crash_at_step_4(self, step, *args, **kwargs):
    if step == 4:
      raise KeyboardInterrupt("preempted")
    return save(self, step, *args, **kwargs)

  monkeypatch.setattr(checkpointing.Checkpoints, "save", crash_at_step_4)
  with pytest.raises(KeyboardInterrupt):
    train.run(cfg, tmp_path / "split")
  split_dir = train.run_directory(tmp_path / "split", cfg)
  assert [m["step"] for m in _metrics(split_dir)] == [1, 2, 3, 4]
  monkeypatch.undo()
  resumed = train.run(cfg, tmp_path / "split")

  assert _metrics(resumed.directory) == _metrics(whole.directory)  # Bitwise.
  params_whole, _ = _final_params(whole.directory, cfg)
  params_resumed, _ = _final_params(resumed.directory, cfg)
  jax.tree.map(np.testing.assert_array_equal, params_resumed, params_whole)


def test_restore_onto_another_mesh(tmp_path):
  cfg = _smoke(train__num_steps=1, mesh__data=8)
  result = train.run(cfg, tmp_path)
  saved, _ = _final_params(result.directory, cfg)
  other = dataclasses.replace(cfg, mesh=sharding.MeshConfig(data=2, fsdp=4))
  restored, _ = _final_params(result.directory, other)
  jax.tree.map(np.testing.assert_array_equal, restored, saved)
  # And the run can continue there: its directory accepts the new mesh.
  longer = dataclasses.replace(other, train=dataclasses.replace(
      other.train, num_steps=1))
  assert train.run(longer, tmp_path).step == 1


# --- Bad input ------------------------------------------------------------


def test_batch_must_divide_the_batch_shards(tmp_path):
  with pytest.raises(ValueError, match="batch_size=12 does not divide over "
                     "the 8 batch shards.*multiple of 8"):
    train.run(_smoke(data__batch_size=12, mesh__data=8), tmp_path)


def test_impossible_mesh(tmp_path):
  with pytest.raises(ValueError, match="needs 3 devices, but 8"):
    train.run(_smoke(mesh__data=3), tmp_path)


def test_unwritable_workdir(tmp_path):
  blocker = tmp_path / "file"
  blocker.write_text("not a directory")
  with pytest.raises(PermissionError, match="choose a writable --workdir"):
    train.run(_smoke(), blocker / "runs")


def test_other_config_in_the_run_directory_is_kept(tmp_path):
  cfg = _smoke(train__num_steps=1)
  train.run(cfg, tmp_path)
  config_file = train.run_directory(tmp_path, cfg) / "config.json"
  before = config_file.read_text()
  with pytest.raises(ValueError, match=r"different config \(sections "
                     r"\['train'\]"):
    train.run(_smoke(train__num_steps=1, train__learning_rate=0.1), tmp_path)
  assert config_file.read_text() == before


def test_truncated_checkpoint_is_reported_and_kept(tmp_path):
  cfg = _smoke(train__num_steps=2, train__checkpoint_every=2)
  result = train.run(cfg, tmp_path)
  step_dir = result.directory / "checkpoints" / "2"
  for f in (step_dir / "state").rglob("*"):
    if f.is_file() and f.stat().st_size > 100:
      f.write_bytes(f.read_bytes()[:50])
  files = sorted(p for p in step_dir.rglob("*"))
  longer = _smoke(train__num_steps=2, train__checkpoint_every=2)
  with pytest.raises(checkpointing.CheckpointError,
                     match="cannot be restored.*Nothing was deleted"):
    _final_params(result.directory, longer)
  assert sorted(p for p in step_dir.rglob("*")) == files


def test_divergence_stops_the_run_and_keeps_the_last_checkpoint(
    tmp_path, monkeypatch):
  cfg = _smoke(train__num_steps=4)
  step = train.train_step

  def nan_from_step_3(state, batch, **kwargs):
    new_state, metrics = step(state, batch, **kwargs)
    bad = jnp.where(state.step >= 2, jnp.nan, 0.0)
    return new_state, {**metrics, "loss": metrics["loss"] + bad}

  monkeypatch.setattr(train, "train_step", nan_from_step_3)
  with pytest.raises(FloatingPointError, match="diverged at step 3.*last "
                     "good checkpoint \\(step 2\\)"):
    train.run(cfg, tmp_path)
  directory = train.run_directory(tmp_path, cfg)
  assert sorted(p.name for p in (directory / "checkpoints").iterdir()) == [
      "1", "2"]
  assert [m["step"] for m in _metrics(directory)] == [1, 2]
