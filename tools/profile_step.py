r"""Where the CPU training step's time goes: host memory reuse and dropout.

  python tools/profile_step.py --batch_size=32 --query_length=32 \
      --passage_length=128

Times our jitted training step (the step of tools/bench_train_step.py) in
three variants, each in its own process, in alternating rounds
(`tools/alternate.py`):
  default            as hybrid_jax runs it;
  no memory reuse    without `hybrid_jax.host_memory` (glibc's stock malloc
                     and JAX's asynchronous CPU dispatch: XLA's step
                     temporaries are mapped afresh every step);
  no dropout         dropout rate 0 (no random bits drawn).
Prints the median seconds and minor page faults per step of each, the cost of
no memory reuse and the share of the step that dropout takes. The step is
float32's (bench_train_step's --dtypes does not apply).
"""

import functools
import os

from absl import app
from absl import flags

import alternate
import bench_train_step
import framework_sides

# `hybrid_jax.host_memory.ENV`, named here: importing hybrid_jax would apply
# the settings to this process (and to the workers it spawns) first.
KEEP_FREED_MEMORY_ENV = "HYBRID_JAX_KEEP_FREED_MEMORY"


def step_without_memory_reuse(*args):
  """`framework_sides.jax_step` in a process without host memory reuse."""
  os.environ[KEEP_FREED_MEMORY_ENV] = "0"  # Before hybrid_jax is imported.
  return framework_sides.jax_step(*args)


def main(argv):
  del argv
  if flags.FLAGS["dtypes"].present:
    raise app.UsageError("profile_step.py times the float32 step only; "
                         "drop --dtypes.")
  os.environ.pop(KEEP_FREED_MEMORY_ENV, None)  # The default, in every side.
  args = bench_train_step.step_args()  # Its flags are ours.
  costs = alternate.median_costs(
      {"default": functools.partial(framework_sides.jax_step, *args),
       "no memory reuse": functools.partial(step_without_memory_reuse, *args),
       "no dropout": functools.partial(framework_sides.jax_step, *args,
                                       dropout=0.0)},
      flags.FLAGS.rounds)
  print(f"batch={args[0]} query_length={args[1][0]} "
        f"passage_length={args[1][1]} freeze_word_embeddings={args[2]}")
  for name, cost in costs.items():
    print(f"{name:16s}{cost['seconds']:7.3f} s/step  "
          f"{cost['minor_faults']:10,.0f} minor page faults/step")
  default = costs["default"]["seconds"]
  print(f"no memory reuse: {costs['no memory reuse']['seconds'] / default:.2f} "
        f"x the step time; dropout: "
        f"{1 - costs['no dropout']['seconds'] / default:.0%} of the step")


if __name__ == "__main__":
  app.run(main)
