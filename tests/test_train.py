"""Training: the loss, the step on several meshes, checkpoints and resume."""

import dataclasses
import functools
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import ratio_sweep
from hybrid_jax import checkpointing
from hybrid_jax import config as config_lib
from hybrid_jax import environment
from hybrid_jax import losses
from hybrid_jax import optimizer
from hybrid_jax import pretrained
from hybrid_jax import run_directory
from hybrid_jax import sharding
from hybrid_jax import train
from hybrid_jax import train_state as train_state_lib
from hybrid_jax import training_step


def _smoke(**overrides) -> config_lib.ExperimentConfig:
  """The smoke preset with `section.field` overrides."""
  c = ratio_sweep.get_config("smoke")
  for key, value in overrides.items():
    section, field = key.split("__")
    c[section][field] = value
  return config_lib.from_config_dict(c)


# --- The loss -------------------------------------------------------------


def _reference_loss(q, p, n, usable, t, symmetric):
  """InfoNCE written out with loops, in float64."""
  q, p, n = (np.asarray(x, np.float64) for x in (q, p, n))
  terms = []
  for i in range(len(q)):
    cands = list(p) + [n[j] for j in range(len(n)) if usable[i][j]]
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
  usable = np.ones((4, 4), bool)
  usable[:, 1] = False  # Pair 1 has no hard negative.
  usable[2, 3] = False  # Pair 3's hard negative is question 2's positive.
  loss, stats = losses.contrastive_loss(q, p, n, usable, temperature=0.1,
                                        symmetric=symmetric)
  np.testing.assert_allclose(
      loss, _reference_loss(q, p, n, usable, 0.1, symmetric), rtol=1e-5)
  sims = q @ np.concatenate([p, n]).T
  valid = np.concatenate([np.ones((4, 4), bool), usable], axis=1)
  np.testing.assert_allclose(stats["positive_similarity"],
                             np.mean(np.diag(sims)), rtol=1e-5)
  negative = valid & ~np.eye(4, 8, dtype=bool)
  np.testing.assert_allclose(stats["negative_similarity"],
                             sims[negative].mean(), rtol=1e-5)
  np.testing.assert_allclose(
      stats["accuracy"],
      np.mean(np.where(valid, sims, -9).argmax(1) == np.arange(4)))


def test_loss_without_hard_negatives_uses_in_batch_ones():
  rng = np.random.default_rng(1)
  q, p = _unit(rng, (3, 5)), _unit(rng, (3, 5))
  loss, _ = losses.contrastive_loss(q, p, temperature=0.05)
  np.testing.assert_allclose(
      loss, _reference_loss(q, p, p[:0], np.zeros((3, 0)), 0.05, False),
      rtol=1e-5)


def test_learning_rate_schedule():
  cfg = config_lib.TrainConfig(num_steps=20, grad_accum_steps=2,
                               learning_rate=1.0, warmup_fraction=0.2)
  schedule = optimizer.learning_rate_schedule(cfg)  # 10 updates, 2 warm-up.
  np.testing.assert_allclose([schedule(i) for i in range(11)],
                             [.5, 1, 1, .875, .75, .625, .5, .375, .25, .125,
                              0], atol=1e-6)
  cosine = optimizer.learning_rate_schedule(dataclasses.replace(
      cfg, schedule="cosine", warmup_fraction=0.0))
  np.testing.assert_allclose([cosine(0), cosine(5), cosine(10)], [1, .5, 0],
                             atol=1e-6)


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
  batch["passage_row"] = np.arange(8, dtype=np.int32) * 3
  batch["negative_row"] = np.array([1, 4, 6, 0, 13, 16, 18, 9], np.int32)
  return batch


def _setup(mesh, cfg):
  loaded = pretrained.load_model(cfg.model, mesh, cfg.seed, cache_dir=None)
  tx, _ = optimizer.make_optimizer(cfg.train)
  return loaded, tx, train_state_lib.create(loaded.params, cfg.train, tx,
                                            mesh)


def test_gradients_against_finite_differences(tiny_batch):
  cfg = _smoke(model__dropout_rate=0.0, train__learn_temperature=True,
               train__symmetric=True)
  mesh = sharding.make_mesh(devices=jax.devices()[:1])
  loaded, _, state = _setup(mesh, cfg)
  loss_fn = jax.jit(lambda params: training_step.compute_loss(
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
      training_step.compute_loss, frozen=state.frozen, graphdef=loaded.graphdef,
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


# --- Runs, checkpoints, resume, bad input ----------------------------------


def _metrics(directory):
  return [json.loads(l) for l in (directory / "metrics.jsonl").open()]


def _restored(directory, cfg):
  """(train state, data state) of the run's newest checkpoint."""
  mesh = sharding.make_mesh(cfg.mesh)
  _, _, state = _setup(mesh, cfg)
  ckpt = checkpointing.Checkpoints(directory / "checkpoints", every=1, keep=9)
  try:
    restored, data = ckpt.restore(ckpt.latest_step(),
                                  train_state_lib.abstract(state))
  finally:
    ckpt.close()
  return jax.device_get(restored), data


def _crash_at(monkeypatch, crash_step):
  """Makes runs die (as if preempted) when they reach `crash_step`."""
  save = checkpointing.Checkpoints.save

  def save_or_crash(self, step, *args, **kwargs):
    if step == crash_step:
      raise KeyboardInterrupt("preempted")
    return save(self, step, *args, **kwargs)

  monkeypatch.setattr(checkpointing.Checkpoints, "save", save_or_crash)


def test_smoke_run_end_to_end(tmp_path, monkeypatch):
  cfg = _smoke(train__num_steps=3, data__hard_negatives=True,
               train__async_checkpoints=True)
  monkeypatch.chdir(tmp_path)  # A relative --workdir (orbax needs absolute).
  result = train.run(cfg, pathlib.Path("."))
  assert result.step == 3 and np.isfinite(result.metrics["loss"])
  directory = pathlib.Path(result.directory)  # For rglob.
  assert directory.name == "ratio_0.500_seed_0"
  assert json.loads((directory / "config.json").read_text())["seed"] == 0
  assert [m["step"] for m in _metrics(directory)] == [1, 2, 3]
  assert any((directory / "events").iterdir())
  assert sorted(p.name for p in (directory / "checkpoints").iterdir()) == [
      "2", "3"]  # keep_checkpoints=2
  state, data = _restored(directory, cfg)
  assert data == {"step": 3} and state.step == 3
  # A finished run is not trained again, and its files stay as they are.
  files = {p: p.read_bytes() for p in directory.rglob("*") if p.is_file()}
  assert train.run(cfg, pathlib.Path(".")).metrics == {}
  assert {p: p.read_bytes() for p in directory.rglob("*")
          if p.is_file()} == files


def _start_steps(directory):
  return [start["step"] for start in environment.read_starts(
      directory / run_directory.ENVIRONMENT_FILE)]


def test_resumed_run_equals_uninterrupted_run(tmp_path, monkeypatch):
  cfg = _smoke(train__num_steps=5, train__checkpoint_every=2)
  whole = train.run(cfg, tmp_path / "whole")
  _crash_at(monkeypatch, 4)
  with pytest.raises(KeyboardInterrupt):
    train.run(cfg, tmp_path / "split")
  split_dir = run_directory.path(tmp_path / "split", cfg)
  assert [m["step"] for m in _metrics(split_dir)] == [1, 2, 3, 4]
  monkeypatch.undo()
  # Execution settings may change on resume; results may not.
  resumed = train.run(dataclasses.replace(cfg, train=dataclasses.replace(
      cfg.train, log_every=2)), tmp_path / "split")

  assert _metrics(resumed.directory) == _metrics(whole.directory)  # Bitwise.
  # What each start ran on: step 0, then the resumption at step 2 (the
  # crash came before step 4 was saved).
  assert _start_steps(whole.directory) == [0]
  assert _start_steps(resumed.directory) == [0, 2]
  state_whole, _ = _restored(whole.directory, cfg)
  state_resumed, _ = _restored(resumed.directory, cfg)
  jax.tree.map(np.testing.assert_array_equal, state_resumed, state_whole)


def test_checkpoint_round_trip_onto_another_mesh(tmp_path):
  cfg = _smoke(train__learn_temperature=True)
  mesh = sharding.make_mesh(sharding.MeshConfig(data=8))
  _, _, state = _setup(mesh, cfg)
  ckpt = checkpointing.Checkpoints(tmp_path, every=1, keep=1)
  ckpt.save(5, state, {"step": 5})
  ckpt.close()
  other_mesh = sharding.make_mesh(sharding.MeshConfig(data=2, fsdp=4))
  _, _, target = _setup(other_mesh, cfg)
  ckpt = checkpointing.Checkpoints(tmp_path, every=1, keep=1)
  restored, data = ckpt.restore(5, train_state_lib.abstract(target))
  ckpt.close()
  assert data == {"step": 5}
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(restored),
               jax.device_get(state))  # Params, optimiser state, step.
  assert (jax.tree.map(lambda x: x.sharding, restored)
          == jax.tree.map(lambda x: x.sharding, target))


def test_resume_on_another_mesh_continues_the_run(tmp_path, monkeypatch):
  cfg = _smoke(train__num_steps=3, train__checkpoint_every=1, mesh__data=8)
  whole = train.run(cfg, tmp_path / "whole")
  _crash_at(monkeypatch, 3)
  with pytest.raises(KeyboardInterrupt):
    train.run(cfg, tmp_path / "split")
  monkeypatch.undo()
  fsdp = dataclasses.replace(cfg, mesh=sharding.MeshConfig(data=1, fsdp=8))
  resumed = train.run(fsdp, tmp_path / "split")
  for a, b in zip(_metrics(resumed.directory), _metrics(whole.directory)):
    assert a["step"] == b["step"]
    np.testing.assert_allclose(a["loss"], b["loss"], rtol=1e-5)


def test_frozen_word_embeddings_and_gradient_accumulation(tmp_path):
  cfg = _smoke(train__num_steps=4, train__grad_accum_steps=2,
               train__freeze_word_embeddings=True)
  mesh = sharding.make_mesh(cfg.mesh)
  loaded, _, start = _setup(mesh, cfg)
  word = loaded.params["query_tower"]["encoder"]["embeddings"]["word"]
  # Neither gradients nor Adam moments for the table.
  assert all(x.shape != word.shape for x in jax.tree.leaves(
      (start.params, start.opt_state)))
  seen = []
  save = checkpointing.Checkpoints.save

  def record(self, step, state, *args, **kwargs):
    seen.append(jax.device_get(state.params))
    return save(self, step, state, *args, **kwargs)

  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(checkpointing.Checkpoints, "save", record)
    result = train.run(cfg, tmp_path)
  final, _ = _restored(result.directory, cfg)
  np.testing.assert_array_equal(
      final.frozen["query_tower"]["encoder"]["embeddings"]["word"][...],
      word[...])
  final = final.params
  same = lambda a, b: all(np.array_equal(x, y) for x, y in zip(
      jax.tree.leaves(a), jax.tree.leaves(b)))
  # Parameters change only on every second batch (after accumulating).
  assert same(seen[0], jax.device_get(start.params))
  assert not same(seen[1], seen[0])
  assert same(seen[2], seen[1]) and not same(seen[3], seen[2])
  assert same(seen[3], final)


def test_truncated_checkpoint_is_reported_and_kept(tmp_path, monkeypatch):
  cfg = _smoke(train__num_steps=3, train__checkpoint_every=2)
  _crash_at(monkeypatch, 3)
  with pytest.raises(KeyboardInterrupt):
    train.run(cfg, tmp_path)
  monkeypatch.undo()
  directory = pathlib.Path(run_directory.path(tmp_path, cfg))
  for f in (directory / "checkpoints" / "2" / "state").rglob("*"):
    if f.is_file() and f.stat().st_size > 100:
      f.write_bytes(f.read_bytes()[:50])
  files = {p: p.read_bytes() for p in directory.rglob("*") if p.is_file()}
  with pytest.raises(checkpointing.CheckpointError,
                     match="cannot be restored.*Nothing was deleted"):
    train.run(cfg, tmp_path)
  assert {p: p.read_bytes() for p in directory.rglob("*")
          if p.is_file()} == files


def test_divergence_stops_the_run_before_saving(tmp_path, monkeypatch):
  cfg = _smoke(train__num_steps=4)
  step = training_step.train_step

  def nan_from_step_3(state, batch, **kwargs):
    new_state, metrics = step(state, batch, **kwargs)
    bad = jnp.where(state.step >= 2, jnp.nan, 0.0)
    return new_state, {**metrics, "loss": metrics["loss"] + bad}

  monkeypatch.setattr(training_step, "train_step", nan_from_step_3)
  with pytest.raises(FloatingPointError, match="diverged at step 3.*"
                     r"\(latest: 2\) are kept"):
    train.run(cfg, tmp_path)
  directory = run_directory.path(tmp_path, cfg)
  assert sorted(p.name for p in (directory / "checkpoints").iterdir()) == [
      "1", "2"]
  assert [m["step"] for m in _metrics(directory)] == [1, 2]


def test_bad_input_leaves_no_trace(tmp_path):
  with pytest.raises(ValueError, match="batch_size=12 does not divide over "
                     "the 8 batch shards.*multiple of 8"):
    train.run(_smoke(data__batch_size=12, mesh__data=8), tmp_path)
  with pytest.raises(ValueError, match="needs 3 devices, but 8"):
    train.run(_smoke(mesh__data=3), tmp_path)
  assert not list(tmp_path.iterdir())
  assert train.run(_smoke(data__batch_size=16, train__num_steps=1),
                   tmp_path).step == 1


def test_unwritable_workdir(tmp_path):
  blocker = tmp_path / "file"
  blocker.write_text("not a directory")
  with pytest.raises(PermissionError, match="choose a writable --workdir"):
    train.run(_smoke(), blocker / "runs")


def test_another_config_in_the_run_directory_is_kept(tmp_path):
  cfg = _smoke(train__num_steps=1)
  train.run(cfg, tmp_path)
  directory = pathlib.Path(run_directory.path(tmp_path, cfg))
  files = {p: p.read_bytes() for p in directory.rglob("*") if p.is_file()}
  with pytest.raises(ValueError, match=r"different config \(\['train."
                     r"learning_rate', 'train.num_steps'\] differ"):
    train.run(_smoke(train__num_steps=2, train__learning_rate=0.1), tmp_path)
  assert {p: p.read_bytes() for p in directory.rglob("*")
          if p.is_file()} == files
