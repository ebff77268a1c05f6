r"""Accelerator benchmark: training step MFU and encoding throughput.

  XLA_FLAGS=--xla_gpu_enable_triton_gemm=false \
      python tools/bench_gpu.py --steps=10 --encode_calls=10  # XLM-R base
  python tools/bench_gpu.py --size=tiny --steps=2 --batch_size=8  # smoke

On one H200 the first command takes about 3 minutes, nearly all of it
compiling; without the flag, XLA autotunes Triton matmuls and compiling the
training step alone took over 150 s. Any GPU or TPU works. The model is
an XLM-R base-shaped dual encoder (250,002-token vocabulary) with fresh
weights: speed does not depend on the values, and nothing is downloaded.
It times `hybrid_jax.training_step.train_step` (bfloat16 compute, float32
parameters and AdamW, dropout 0.1 unless `--dropout_rate`, InfoNCE, donated
state) and the jitted passage encoder, and prints a table: seconds per
step, tokens/s, model TFLOP/s and model FLOPs utilisation (MFU) against the
chip's peak dense bfloat16 rate (`--peak_tflops`, or known from the device
kind). Model FLOPs count the matmuls only (weights and attention, 3x the
forward pass for a training step), the usual convention; the target for
training is MFU >= 45%.
"""

import functools
import time

from absl import app
from absl import flags
import numpy as np

_SIZE = flags.DEFINE_string("size", "base", "Encoder size (encoder.SIZES).")
_DTYPE = flags.DEFINE_enum("dtype", "bfloat16", ["bfloat16", "float32"],
                           "Compute dtype.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 256, "Pairs per step.")
_QUERY_LENGTH = flags.DEFINE_integer("query_length", 64, "Question tokens.")
_PASSAGE_LENGTH = flags.DEFINE_integer("passage_length", 256,
                                       "Passage tokens.")
_DROPOUT_RATE = flags.DEFINE_float("dropout_rate", 0.1, "Dropout rate.")
_STEPS = flags.DEFINE_integer("steps", 20, "Timed training steps.")
_ENCODE_BATCH = flags.DEFINE_integer("encode_batch", 1024,
                                     "Passages per encoding batch.")
_ENCODE_CALLS = flags.DEFINE_integer("encode_calls", 20,
                                     "Timed encoding batches.")
_PEAK_TFLOPS = flags.DEFINE_float(
    "peak_tflops", 0.0, "Peak dense bfloat16 TFLOP/s of one device; 0: "
    "from PEAK_TFLOPS by device kind (MFU left out if unknown).")

VOCAB_SIZE = 250_002  # XLM-R's.
# Dense bfloat16 peak TFLOP/s per device, by device_kind (others: the flag).
PEAK_TFLOPS = {"NVIDIA H200": 989.0, "NVIDIA H100 80GB HBM3": 989.0,
               "NVIDIA A100-SXM4-80GB": 312.0, "NVIDIA A100-SXM4-40GB": 312.0,
               "TPU v4": 275.0, "TPU v5 lite": 197.0, "TPU v5p": 459.0,
               "TPU v6 lite": 918.0}


def forward_flops(cfg, batch: int, length: int) -> float:
  """Matmul FLOPs of one encoder forward pass over [batch, length] tokens."""
  h, f = cfg.hidden_size, cfg.mlp_size
  per_token = 2 * (4 * h * h + 2 * h * f) + 2 * 2 * length * h
  return float(cfg.num_layers * per_token * batch * length)


def peak_tflops(device) -> float | None:
  """The flag, else the peak of `device`'s kind if known, else None."""
  if _PEAK_TFLOPS.value:
    return _PEAK_TFLOPS.value
  return PEAK_TFLOPS.get(device.device_kind)


def median_seconds(call, repeats: int) -> float:
  """Median wall seconds of `call()` (which blocks until done)."""
  seconds = []
  for _ in range(repeats):
    start = time.perf_counter()
    call()
    seconds.append(time.perf_counter() - start)
  return float(np.median(seconds))


def main(argv):
  del argv
  # hybrid_jax first: importing it sets up host memory reuse.
  from hybrid_jax import config as config_lib  # pylint: disable=g-import-not-at-top
  from hybrid_jax import embedding  # pylint: disable=g-import-not-at-top
  from hybrid_jax import optimizer as optimizer_lib  # pylint: disable=g-import-not-at-top
  from hybrid_jax import sharding  # pylint: disable=g-import-not-at-top
  from hybrid_jax import train_state  # pylint: disable=g-import-not-at-top
  from hybrid_jax import training_step  # pylint: disable=g-import-not-at-top
  from hybrid_jax.model import dual_encoder  # pylint: disable=g-import-not-at-top
  from hybrid_jax.model import encoder  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  mesh = sharding.make_mesh()
  enc = encoder.sized_config(_SIZE.value, "xlmr", VOCAB_SIZE, pad_id=1,
                             dropout_rate=_DROPOUT_RATE.value,
                             dtype=_DTYPE.value)
  graphdef, params = dual_encoder.init_state(
      dual_encoder.DualEncoderConfig(enc), mesh, seed=0)
  encoder_params = jax.tree.map(jnp.copy, params)  # The step donates params.
  cfg = config_lib.TrainConfig(num_steps=1000, temperature=0.05)
  tx, schedule = optimizer_lib.make_optimizer(cfg)
  state = train_state.create(params, cfg, tx, mesh)
  step = jax.jit(functools.partial(
      training_step.train_step, graphdef=graphdef, tx=tx, schedule=schedule,
      cfg=cfg, seed=0), donate_argnums=0)

  rng = np.random.default_rng(0)
  b, lq, lp = _BATCH_SIZE.value, _QUERY_LENGTH.value, _PASSAGE_LENGTH.value
  ids = lambda n, l: rng.integers(5, VOCAB_SIZE, (n, l)).astype(np.int32)
  batch_sharding = jax.NamedSharding(
      mesh, sharding.logical_to_spec(("act_batch", None)))
  batch = {"query_ids": ids(b, lq), "query_mask": np.ones((b, lq), bool),
           "passage_ids": ids(b, lp), "passage_mask": np.ones((b, lp), bool)}
  batch = jax.device_put(batch, batch_sharding)

  def train_once():
    nonlocal state
    state, metrics = step(state, batch)
    jax.block_until_ready(metrics["loss"])

  eb = _ENCODE_BATCH.value
  encode = jax.jit(embedding.encode_fn(graphdef, "passage"))
  passages = jax.device_put((ids(eb, lp), np.ones((eb, lp), bool)),
                            batch_sharding)
  encode_once = lambda: encode(encoder_params, *passages).block_until_ready()

  with sharding.use_mesh(mesh):
    start = time.perf_counter()
    train_once()
    encode_once()
    compile_seconds = time.perf_counter() - start
    step_seconds = median_seconds(train_once, _STEPS.value)
    encode_seconds = median_seconds(encode_once, _ENCODE_CALLS.value)

  device = jax.devices()[0]
  peak = peak_tflops(device)
  rows = [
      ("training step", step_seconds, b * (lq + lp),
       3 * (forward_flops(enc, b, lq) + forward_flops(enc, b, lp))),
      ("passage encoding", encode_seconds, eb * lp,
       forward_flops(enc, eb, lp)),
  ]
  print(f"{_SIZE.value} ({enc.num_layers} layers, hidden {enc.hidden_size}) "
        f"{_DTYPE.value}, {jax.device_count()} x {device.device_kind}, "
        f"peak {peak or 'unknown'} TFLOP/s per device, first calls "
        f"(compile) {compile_seconds:.1f} s")
  print(f"training: batch {b}, questions {lq} / passages {lp} tokens, "
        f"dropout {_DROPOUT_RATE.value} ({jax.config.jax_default_prng_impl}); "
        f"encoding: {eb} passages of {lp} tokens")
  print(f"{'':18s} {'s/call':>8s} {'tokens/s':>12s} {'TFLOP/s':>9s} "
        f"{'MFU':>6s}")
  for name, seconds, tokens, flops in rows:
    tflops = flops / seconds / 1e12
    mfu = (f"{tflops / (peak * jax.device_count()):6.1%}" if peak
           else f"{'n/a':>6s}")
    print(f"{name:18s} {seconds:8.4f} {tokens / seconds:12,.0f} "
          f"{tflops:9.1f} {mfu}")


if __name__ == "__main__":
  app.run(main)
