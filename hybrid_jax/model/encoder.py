"""A Flax NNX transformer encoder in the XLM-R and BERT layouts.

Both layouts are post-LayerNorm BERT encoders; they differ only in details
that `EncoderConfig` carries:

  * XLM-R (RoBERTa): positions count from `pad_id + 1` over non-padding
    tokens, one token type, LayerNorm eps 1e-5.
  * BERT (mBERT, LaBSE, multilingual-e5): positions from 0, two token types,
    LayerNorm eps 1e-12.

Every parameter carries logical axis names (see `hybrid_jax.sharding`), and
activations are constrained at block boundaries, so the same module runs
replicated, FSDP- or tensor-sharded.
"""

import dataclasses
import functools
import math
from typing import Literal

import jax
from jax.experimental import layout
import jax.numpy as jnp
from flax import nnx

from hybrid_jax import sharding

Layout = Literal["xlmr", "bert"]
LAYOUTS = ("xlmr", "bert")

# (layers, hidden size, heads, MLP size) of the sizes a run can name.
SIZES = {
    "tiny": (2, 32, 4, 64),
    "e5-small": (12, 384, 12, 1536),
    "base": (12, 768, 12, 3072),
    "large": (24, 1024, 16, 4096),
}

ACTIVATIONS = {
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "relu": jax.nn.relu,
}

DTYPES = ("float32", "bfloat16")
VOCAB_MULTIPLE = 128  # The embedding table is padded to this many rows.

_ACT = ("act_batch", "act_length", "act_embed")


@dataclasses.dataclass(frozen=True)
class EncoderConfig:
  """Architecture of one encoder tower.

  Attributes:
    layout: "xlmr" or "bert" (see the module docstring).
    vocab_size: rows the tokenizer can produce (the table is padded further).
    num_layers, hidden_size, num_heads, mlp_size: transformer sizes.
    max_positions: rows of the position table.
    type_vocab_size: rows of the token-type table.
    layer_norm_eps: LayerNorm epsilon.
    pad_id: padding token id (XLM-R positions start after it).
    activation: MLP activation, a key of `ACTIVATIONS`.
    dropout_rate: dropout on embeddings, attention weights and block outputs.
    dtype: compute dtype; param_dtype: storage dtype of the parameters. On
      GPU/TPU, float32 matmuls run at the backend's default precision (TF32
      or bf16 passes); set `jax_default_matmul_precision=highest` for exact
      float32.
  """
  layout: Layout
  vocab_size: int
  num_layers: int
  hidden_size: int
  num_heads: int
  mlp_size: int
  max_positions: int
  type_vocab_size: int
  layer_norm_eps: float
  pad_id: int
  activation: str = "gelu"
  dropout_rate: float = 0.1
  dtype: str = "float32"
  param_dtype: str = "float32"

  def __post_init__(self):
    if self.layout not in LAYOUTS:
      raise ValueError(f"layout={self.layout!r}: use 'xlmr' or 'bert'.")
    if self.hidden_size % self.num_heads:
      raise ValueError(f"hidden_size {self.hidden_size} is not a multiple of "
                       f"num_heads {self.num_heads}.")
    if self.activation not in ACTIVATIONS:
      raise ValueError(f"activation {self.activation!r} is not supported; "
                       f"known: {sorted(ACTIVATIONS)}.")
    for name in ("dtype", "param_dtype"):
      if getattr(self, name) not in DTYPES:
        raise ValueError(f"{name}={getattr(self, name)!r}: use 'float32' or "
                         "'bfloat16'.")

  @property
  def padded_vocab_size(self) -> int:
    """Rows of the embedding table: vocab_size rounded up to VOCAB_MULTIPLE."""
    return -(-self.vocab_size // VOCAB_MULTIPLE) * VOCAB_MULTIPLE

  @property
  def head_dim(self) -> int:
    """Size of one attention head."""
    return self.hidden_size // self.num_heads

  @property
  def max_length(self) -> int:
    """Longest input (tokens) the position table covers."""
    if self.layout == "xlmr":  # Positions pad_id + 1 ... pad_id + length.
      return self.max_positions - self.pad_id - 1
    return self.max_positions


def sized_config(size: str, layout: Layout, vocab_size: int, pad_id: int,
                 **overrides) -> EncoderConfig:
  """The config of a named size (`SIZES`) in `layout`, for fresh weights."""
  if size not in SIZES:
    raise ValueError(f"model.size={size!r}; use one of {sorted(SIZES)}.")
  layers, hidden, heads, mlp = SIZES[size]
  xlmr = layout == "xlmr"
  return EncoderConfig(
      layout=layout, vocab_size=vocab_size, num_layers=layers,
      hidden_size=hidden, num_heads=heads, mlp_size=mlp,
      max_positions=514 if xlmr else 512, type_vocab_size=1 if xlmr else 2,
      layer_norm_eps=1e-5 if xlmr else 1e-12, pad_id=pad_id, **overrides)


def position_ids(mask: jax.Array, layout: Layout, pad_id: int) -> jax.Array:
  """Position ids as the layout defines them ([batch, length] int32).

  XLM-R numbers the non-padding tokens from pad_id + 1 and gives padding
  tokens pad_id (as RoBERTa's `create_position_ids_from_input_ids`); BERT
  numbers every slot from 0.
  """
  if layout == "xlmr":
    mask = mask.astype(jnp.int32)
    return jnp.cumsum(mask, axis=1) * mask + pad_id
  return jnp.broadcast_to(jnp.arange(mask.shape[1], dtype=jnp.int32),
                          mask.shape)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def einsum(spec: str, a: jax.Array, b: jax.Array) -> jax.Array:
  """`jnp.einsum(spec, a, b)` with a float32 result, differentiated in the
  inputs' dtype.

  The matmul and both matmuls of its gradient take operands in the dtype of
  `a` and `b` (the compute dtype) and sum in float32; callers cast the
  result. In bfloat16 that is mixed precision as accelerators run it, and
  what makes bfloat16 fast on CPUs with AVX-512 BF16: XLA:CPU runs bfloat16 x
  bfloat16 -> float32 matmuls on those instructions, but a matmul with a
  bfloat16 result, and autodiff's gradient matmuls (their cotangent is
  float32), in float32; and, without a multi-device mesh, each bfloat16
  matmul comes in the form its kernels take (`_kernel_form_matmul`).
  Reverse-mode differentiable only; `spec` is explicit ("ab,bc->ac"), names
  each index of an operand or the result once, every index of an operand
  appears in the other operand or the result, every index of the result in
  an operand, and shapes do not broadcast.
  """
  _einsum_terms(spec)
  if a.dtype != b.dtype:
    raise ValueError(f"encoder.einsum operands differ in dtype: {a.dtype} and "
                     f"{b.dtype}; cast both to the compute dtype.")
  if a.dtype == jnp.bfloat16 and _cpu_without_mesh():
    return _kernel_form_matmul(spec, a, b)
  return jnp.einsum(spec, a, b, preferred_element_type=jnp.float32)


def _cpu_without_mesh() -> bool:
  """Whether the computation being traced compiles for the CPU with no
  multi-device mesh set (callers trace sharded computations under
  `sharding.use_mesh`): where `_kernel_form_matmul` pays. Other compilers
  choose their own layouts, and the SPMD partitioner replicates the operand
  of a layout constraint."""
  return (jax.sharding.get_abstract_mesh().size <= 1
          and jax.default_backend() == "cpu")


def _kernel_form_matmul(spec: str, a: jax.Array, b: jax.Array) -> jax.Array:
  """`jnp.einsum(spec, a, b)` in float32, as XLA:CPU's matmul kernels take it.

  Its matmul libraries take [batch, m, k] @ [batch, k, n] in row-major
  layout; XLA converts the bfloat16 operands of other matmuls to float32 and
  runs them on its float32 path. Autodiff's weight gradients (contracting
  the token axes of both operands) and matmuls of the head-major attention
  activations are such matmuls, so the operands are transposed into that
  form here and laid out row-major: copies, which cost far less than the
  float32 matmuls they avoid (in float32, the copies cost time and gain
  nothing, so float32 matmuls keep their form). The operand whose free
  indices lead the result goes first, so the result needs no transpose for
  the encoder's specs.
  """
  spec_a, spec_b, out = _einsum_terms(spec)
  free = [i for i in out if not (i in spec_a and i in spec_b)]
  if free and free[0] in spec_b:
    return _kernel_form_matmul(f"{spec_b},{spec_a}->{out}", b, a)
  batch = [i for i in out if i in spec_a and i in spec_b]
  contracted = [i for i in spec_a if i in spec_b and i not in out]
  free_a = [i for i in free if i in spec_a]
  free_b = [i for i in free if i in spec_b]
  a = _row_major(a, spec_a, batch + free_a + contracted)
  b = _row_major(b, spec_b, batch + contracted + free_b)
  n, k = len(batch), len(contracted)
  y = jax.lax.dot_general(
      a, b, ((tuple(range(a.ndim - k, a.ndim)), tuple(range(n, n + k))),
             (tuple(range(n)), tuple(range(n)))),
      preferred_element_type=jnp.float32)
  order = batch + free_a + free_b
  return jnp.transpose(y, [order.index(i) for i in out])


def _row_major(x: jax.Array, spec: str, order: list[str]) -> jax.Array:
  """`x` (indexed by `spec`) transposed to `order`, in row-major layout."""
  x = jnp.transpose(x, [spec.index(i) for i in order])
  return layout.with_layout_constraint(
      x, layout.Layout(major_to_minor=tuple(range(x.ndim))))


def _einsum_terms(spec: str) -> tuple[str, str, str]:
  """(a, b, result) index strings of `spec`, checked as `einsum` needs."""
  inputs, arrow, out = spec.replace(" ", "").partition("->")
  operands = inputs.split(",")
  if (not arrow or len(operands) != 2 or set(out) - set("".join(operands))
      or any(len(set(term)) < len(term) for term in operands + [out])
      or any(set(term) - set(other + out)
             for term, other in (operands, operands[::-1]))):
    raise ValueError(
        f"encoder.einsum needs an explicit two-operand spec that names each "
        f"index of an operand or the result once, whose operand indices each "
        f"appear in the other operand or the result, and whose result "
        f"indices each appear in an operand, e.g. 'ti,io->to'; got {spec!r}.")
  return operands[0], operands[1], out


def _einsum_forward(spec, a, b):
  return einsum(spec, a, b), (a, b)


def _einsum_backward(spec, residuals, grad):
  a, b = residuals
  spec_a, spec_b, out = _einsum_terms(spec)
  grad = grad.astype(a.dtype)
  return (einsum(f"{out},{spec_b}->{spec_a}", grad, b).astype(a.dtype),
          einsum(f"{out},{spec_a}->{spec_b}", grad, a).astype(b.dtype))


einsum.defvjp(_einsum_forward, _einsum_backward)


class Dense(nnx.Module):
  """x @ kernel + bias, with multi-dimensional, logically named in/outputs.

  E.g. in_shape=(hidden,), out_shape=(heads, head_dim) projects [..., hidden]
  to [..., heads, head_dim] with a [hidden, heads, head_dim] kernel.
  """

  def __init__(self, in_shape: tuple[int, ...], out_shape: tuple[int, ...],
               in_axes: tuple[str, ...], out_axes: tuple[str, ...],
               cfg: EncoderConfig, *, rngs: nnx.Rngs):
    pdtype = jnp.dtype(cfg.param_dtype)
    init = nnx.initializers.normal(0.02)
    self.kernel = nnx.Param(init(rngs.params(), in_shape + out_shape, pdtype),
                            out_sharding=in_axes + out_axes)
    self.bias = nnx.Param(jnp.zeros(out_shape, pdtype), out_sharding=out_axes)
    self._num_in_axes = len(in_shape)
    self._dtype = jnp.dtype(cfg.dtype)

  def __call__(self, x: jax.Array) -> jax.Array:
    """Projects the trailing input dimensions of `x` to the output ones."""
    # One 2-D matmul, [tokens, in] @ [in, out]: the shape CPU matmul
    # kernels run fastest (multi-axis einsums ran up to 1.5x slower).
    kernel = self.kernel[...].astype(self._dtype)
    in_size = math.prod(kernel.shape[:self._num_in_axes])
    y = einsum("ti,io->to", x.astype(self._dtype).reshape(-1, in_size),
               kernel.reshape(in_size, -1))
    y = y.reshape(*x.shape[:x.ndim - self._num_in_axes],
                  *kernel.shape[self._num_in_axes:])
    return (y + self.bias[...].astype(jnp.float32)).astype(self._dtype)


class LayerNorm(nnx.Module):
  """LayerNorm computed in float32, returned in the compute dtype."""

  def __init__(self, cfg: EncoderConfig):
    pdtype = jnp.dtype(cfg.param_dtype)
    self.scale = nnx.Param(jnp.ones((cfg.hidden_size,), pdtype),
                           out_sharding=("norm",))
    self.bias = nnx.Param(jnp.zeros((cfg.hidden_size,), pdtype),
                          out_sharding=("norm",))
    self._eps = cfg.layer_norm_eps
    self._dtype = jnp.dtype(cfg.dtype)

  def __call__(self, x: jax.Array) -> jax.Array:
    """Normalises the last axis of `x`."""
    x = x.astype(jnp.float32)
    mean = x.mean(-1, keepdims=True)
    var = jnp.square(x - mean).mean(-1, keepdims=True)
    y = (x - mean) * jax.lax.rsqrt(var + self._eps)
    y = y * self.scale[...].astype(jnp.float32) + self.bias[...].astype(
        jnp.float32)
    return y.astype(self._dtype)


class Dropout(nnx.Module):
  """Inverted dropout that draws 16 random bits per element.

  nnx.Dropout draws 32 bits per element (a float uniform); a 32-bit word
  here decides two elements, which halves the cost of the random numbers,
  a large part of a CPU training step. An element is dropped when its 16
  bits fall below round(rate * 2**16), so the rate is exact to 2**-17, and
  kept elements are scaled by the inverse keep probability (exact in float32,
  rounded to the compute dtype otherwise).
  """

  def __init__(self, rate: float):
    self._threshold = round(rate * 2**16)

  def __call__(self, x: jax.Array, rngs: nnx.Rngs | None) -> jax.Array:
    """`x` with dropout from `rngs.dropout()`; unchanged when `rngs` is None."""
    if rngs is None or not self._threshold:
      return x
    words = jax.random.bits(rngs.dropout(), (-(-x.size // 2),), jnp.uint32)
    bits = jax.lax.bitcast_convert_type(words, jnp.uint16).reshape(-1)
    keep = bits[:x.size].reshape(x.shape) >= self._threshold
    scale = 2**16 / (2**16 - self._threshold)
    return jnp.where(keep, x * jnp.asarray(scale, x.dtype), jnp.zeros_like(x))


class Embeddings(nnx.Module):
  """Word + position + token-type embeddings, LayerNorm, dropout."""

  def __init__(self, cfg: EncoderConfig, *, rngs: nnx.Rngs):
    pdtype = jnp.dtype(cfg.param_dtype)
    init = nnx.initializers.normal(0.02)
    h = cfg.hidden_size
    self.word = nnx.Param(init(rngs.params(), (cfg.padded_vocab_size, h),
                               pdtype), out_sharding=("vocab", "embed"))
    self.position = nnx.Param(init(rngs.params(), (cfg.max_positions, h),
                                   pdtype), out_sharding=(None, "embed"))
    self.token_type = nnx.Param(init(rngs.params(), (cfg.type_vocab_size, h),
                                     pdtype), out_sharding=(None, "embed"))
    self.layer_norm = LayerNorm(cfg)
    self.dropout = Dropout(cfg.dropout_rate)
    self._cfg = cfg

  def __call__(self, ids: jax.Array, mask: jax.Array,
               rngs: nnx.Rngs | None) -> jax.Array:
    """Embeds `ids` [batch, length]; `mask` marks the real tokens."""
    cfg = self._cfg
    positions = position_ids(mask, cfg.layout, cfg.pad_id)
    dtype = jnp.dtype(cfg.dtype)  # Summed in the compute dtype.
    x = (jnp.take(self.word[...], ids, axis=0).astype(dtype)
         + jnp.take(self.position[...], positions, axis=0).astype(dtype)
         + self.token_type[...][0].astype(dtype))
    x = self.layer_norm(x)
    return self.dropout(x, rngs)


class SelfAttention(nnx.Module):
  """Multi-head self-attention over the non-padding keys."""

  def __init__(self, cfg: EncoderConfig, *, rngs: nnx.Rngs):
    h, heads = (cfg.hidden_size,), (cfg.num_heads, cfg.head_dim)
    qkv = dict(in_shape=h, out_shape=heads, in_axes=("embed",),
               out_axes=("heads", "kv"), cfg=cfg, rngs=rngs)
    self.query = Dense(**qkv)
    self.key = Dense(**qkv)
    self.value = Dense(**qkv)
    self.output = Dense(heads, h, ("heads", "kv"), ("embed",), cfg, rngs=rngs)
    self.dropout = Dropout(cfg.dropout_rate)
    self._scale = cfg.head_dim ** -0.5

  def __call__(self, x: jax.Array, mask: jax.Array,
               rngs: nnx.Rngs | None) -> jax.Array:
    """Attends from every position of `x` to the keys where `mask` is set."""
    # Heads before positions: the batched matmuls over (batch, heads) run
    # faster on contiguous [length, kv] blocks.
    q, k, v = (jnp.swapaxes(dense(x), 1, 2)  # Each [b, heads, l, kv].
               for dense in (self.query, self.key, self.value))
    logits = einsum("bhqd,bhkd->bhqk", q, k)
    logits = jnp.where(mask[:, None, None, :], logits * self._scale,
                       jnp.finfo(jnp.float32).min)
    weights = jax.nn.softmax(logits, axis=-1).astype(x.dtype)
    weights = self.dropout(weights, rngs)
    context = einsum("bhqk,bhkd->bhqd", weights, v).astype(x.dtype)
    return self.output(jnp.swapaxes(context, 1, 2))


class Layer(nnx.Module):
  """One post-LayerNorm transformer block: attention, then MLP."""

  def __init__(self, cfg: EncoderConfig, *, rngs: nnx.Rngs):
    h, f = (cfg.hidden_size,), (cfg.mlp_size,)
    self.attention = SelfAttention(cfg, rngs=rngs)
    self.attention_norm = LayerNorm(cfg)
    self.mlp_in = Dense(h, f, ("embed",), ("mlp",), cfg, rngs=rngs)
    self.mlp_out = Dense(f, h, ("mlp",), ("embed",), cfg, rngs=rngs)
    self.mlp_norm = LayerNorm(cfg)
    self.dropout = Dropout(cfg.dropout_rate)
    self._activation = ACTIVATIONS[cfg.activation]

  def __call__(self, x: jax.Array, mask: jax.Array,
               rngs: nnx.Rngs | None) -> jax.Array:
    """Applies the block to hidden states `x` [batch, length, hidden]."""
    x = self.attention_norm(x + self.dropout(self.attention(x, mask, rngs),
                                             rngs))
    y = self.mlp_out(self._activation(self.mlp_in(x)))
    x = self.mlp_norm(x + self.dropout(y, rngs))
    return sharding.constrain(x, _ACT)


class Encoder(nnx.Module):
  """Token ids and attention mask -> contextual hidden states."""

  def __init__(self, cfg: EncoderConfig, *, rngs: nnx.Rngs):
    self.config = cfg
    self.embeddings = Embeddings(cfg, rngs=rngs)
    self.layers = nnx.List([Layer(cfg, rngs=rngs)
                            for _ in range(cfg.num_layers)])

  def __call__(self, ids: jax.Array, mask: jax.Array,
               rngs: nnx.Rngs | None = None) -> jax.Array:
    """Hidden states [batch, length, hidden] of `ids` ([batch, length]).

    Args:
      ids: token ids; padding slots hold `config.pad_id`.
      mask: True (or 1) on real tokens.
      rngs: dropout randomness (an `nnx.Rngs` with a "dropout" stream);
        None runs deterministically (evaluation).
    """
    if ids.shape[1] > self.config.max_length:
      raise ValueError(
          f"Inputs of {ids.shape[1]} tokens exceed the model's "
          f"{self.config.max_positions} positions: use a max length of at "
          f"most {self.config.max_length} tokens.")
    mask = mask.astype(bool)
    x = sharding.constrain(self.embeddings(ids, mask, rngs), _ACT)
    for layer in self.layers:
      x = layer(x, mask, rngs)
    return x
