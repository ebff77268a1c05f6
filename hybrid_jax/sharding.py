"""The device mesh and the logical-axis rules that shard the model over it.

Every parameter and block-boundary activation names its dimensions logically
("vocab", "embed", "heads", ...). `LOGICAL_RULES` maps those names onto the
mesh axes `("data", "fsdp", "tensor")`:

  * data:   batch only (pure data parallelism; parameters replicated);
  * fsdp:   batch and the "embed" dimension of every parameter (ZeRO-3 style);
  * tensor: heads, MLP and vocabulary (Megatron style).

Code runs under `use_mesh(mesh)`, which sets both the mesh and the rules.

In a multi-process run each process holds some rows of a batch-sharded
array (`process_rows`; on CPU and GPU one contiguous block, on TPU slices
possibly interleaved, as the topology orders the devices): it feeds only
those rows, and reads back only those (`local_rows`).
"""

import contextlib
import dataclasses
import math
from typing import Iterator, Sequence

import jax
import numpy as np
from flax import nnx

AXES = ("data", "fsdp", "tensor")

LOGICAL_RULES = (
    # Parameters.
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("heads", "tensor"),
    ("mlp", "tensor"),
    ("kv", None),
    ("proj", None),
    ("norm", None),
    # Activations.
    ("act_batch", ("data", "fsdp")),
    ("act_length", None),
    ("act_embed", None),
)


@dataclasses.dataclass(frozen=True)
class MeshConfig:
  """Sizes of the mesh axes; exactly one may be -1 (all remaining devices)."""
  data: int = -1
  fsdp: int = 1
  tensor: int = 1

  def __post_init__(self):
    sizes = dataclasses.astuple(self)
    if sizes.count(-1) > 1 or any(s == 0 or s < -1 for s in sizes):
      raise ValueError(
          f"mesh sizes (data, fsdp, tensor)={sizes}: each must be a positive "
          "integer, with at most one -1 (meaning: all remaining devices).")


def make_mesh(config: MeshConfig = MeshConfig(),
              devices: Sequence[jax.Device] | None = None) -> jax.sharding.Mesh:
  """A ("data", "fsdp", "tensor") mesh over `devices` (default: all)."""
  devices = list(jax.devices() if devices is None else devices)
  sizes = list(dataclasses.astuple(config))
  known = math.prod(s for s in sizes if s != -1)
  if -1 in sizes:
    if len(devices) % known:
      raise ValueError(
          f"mesh {dict(zip(AXES, sizes))} cannot use {len(devices)} devices: "
          f"{len(devices)} is not a multiple of {known}. Change the "
          "--config.mesh.* sizes.")
    sizes[sizes.index(-1)] = len(devices) // known
  if math.prod(sizes) != len(devices):
    raise ValueError(
        f"mesh {dict(zip(AXES, sizes))} needs {math.prod(sizes)} devices, "
        f"but {len(devices)} are available. Set one --config.mesh.* size to "
        "-1 or make the sizes multiply to the device count.")
  return jax.make_mesh(
      tuple(sizes), AXES, devices=devices,
      axis_types=(jax.sharding.AxisType.Auto,) * len(AXES))


@contextlib.contextmanager
def use_mesh(mesh: jax.sharding.Mesh) -> Iterator[None]:
  """Runs the enclosed code on `mesh`, with `LOGICAL_RULES`."""
  with jax.set_mesh(mesh), nnx.logical_axis_rules(LOGICAL_RULES):
    yield


def logical_to_spec(names: Sequence[str | None]) -> jax.sharding.PartitionSpec:
  """The PartitionSpec of logical axis `names` under `LOGICAL_RULES`."""
  rules = dict(LOGICAL_RULES)
  return jax.sharding.PartitionSpec(*(rules[n] if n else None for n in names))


def constrain(x: jax.Array, names: Sequence[str | None]) -> jax.Array:
  """Constrains activation `x` to the sharding of its logical axis names.

  Outside a mesh (plain single-device use) this does nothing.
  """
  if jax.sharding.get_abstract_mesh().empty:
    return x
  return jax.lax.with_sharding_constraint(x, logical_to_spec(names))


def check_divisible(abstract_state: nnx.State,
                    mesh: jax.sharding.Mesh) -> None:
  """Raises if a parameter dimension does not divide its mesh axes."""
  bad = []
  for path, leaf in nnx.to_flat_state(abstract_state):
    spec = leaf.sharding.spec
    for dim, axes in zip(leaf.shape, spec):
      axes = (axes,) if isinstance(axes, str) else axes or ()
      parts = math.prod(mesh.shape[a] for a in axes)
      if dim % parts:
        bad.append(f"{'.'.join(map(str, path))} {leaf.shape} over {spec}")
  if bad:
    raise ValueError(
        f"Parameters do not divide the mesh {dict(mesh.shape)}: "
        + "; ".join(bad[:5]) + ". Use smaller fsdp/tensor sizes (or a mesh "
        "whose sizes divide the model's hidden size, heads and MLP size).")


def process_rows(batch_sharding: jax.sharding.Sharding, size: int,
                 process: int | None = None) -> np.ndarray:
  """The rows, ascending, of a `size`-row global batch that the devices of
  `process` (default: this one) hold under `batch_sharding`.

  The processes hold disjoint rows unless a mesh axis replicates the batch
  across them.
  """
  process = jax.process_index() if process is None else process
  spans = {index[0].indices(size)[:2] for device, index in
           batch_sharding.devices_indices_map((size,)).items()
           if device.process_index == process}
  return np.concatenate([np.arange(*span) for span in sorted(spans)])


def local_rows(array: jax.Array) -> np.ndarray:
  """This process's rows of batch-sharded `array` (the rows of
  `process_rows`, in its order), as one host array."""
  shards = {shard.index[0].indices(array.shape[0])[:2]: shard.data
            for shard in array.addressable_shards}
  return np.concatenate([np.asarray(shards[span]) for span in sorted(shards)])
