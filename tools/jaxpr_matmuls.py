"""The matmuls a JAX program runs, read from its jaxpr, and their einsums.

tools/bench_matmuls.py times them alone, in JAX and in PyTorch; flag-free,
so tests import it.
"""

import math
import string
from typing import NamedTuple


class Matmul(NamedTuple):
  """One `lax.dot_general`: operand shapes and dimension numbers."""
  lhs: tuple[int, ...]
  rhs: tuple[int, ...]
  dimension_numbers: tuple  # ((lhs, rhs contracting), (lhs, rhs batch)).

  @property
  def batched(self) -> bool:
    """Whether it has batch dimensions (attention's products)."""
    return bool(self.dimension_numbers[1][0])

  @property
  def flops(self) -> int:
    """Multiplies and adds: 2 x batch x lhs free x rhs free x contracted."""
    (lhs_contracting, rhs_contracting), (lhs_batch, rhs_batch) = (
        self.dimension_numbers)
    lhs_free = [n for i, n in enumerate(self.lhs)
                if i not in lhs_contracting + lhs_batch]
    rhs_free = [n for j, n in enumerate(self.rhs)
                if j not in rhs_contracting + rhs_batch]
    return 2 * math.prod(self.lhs[i] for i in lhs_contracting + lhs_batch) * (
        math.prod(lhs_free) * math.prod(rhs_free))


def einsum_spec(matmul: Matmul) -> str:
  """The einsum of `matmul` ("ab,bc->ac"), its result ordered as
  `lax.dot_general` orders it: batch, then lhs free, then rhs free axes."""
  (lhs_contracting, rhs_contracting), (lhs_batch, rhs_batch) = (
      matmul.dimension_numbers)
  letters = iter(string.ascii_letters)
  lhs = [next(letters) for _ in matmul.lhs]
  rhs = [None] * len(matmul.rhs)
  for i, j in zip(lhs_contracting + lhs_batch, rhs_contracting + rhs_batch):
    rhs[j] = lhs[i]
  rhs = [index or next(letters) for index in rhs]
  out = ([lhs[i] for i in lhs_batch]
         + [x for i, x in enumerate(lhs)
            if i not in lhs_contracting + lhs_batch]
         + [x for j, x in enumerate(rhs)
            if j not in rhs_contracting + rhs_batch])
  return f"{''.join(lhs)},{''.join(rhs)}->{''.join(out)}"


def collect(jaxpr) -> list[Matmul]:
  """Every float32 `dot_general` of `jaxpr`, in order, through nested jits
  and custom derivatives; a scan's body counts its length times. (XLA may
  drop one whose result is unused.)

  Raises:
    ValueError: a matmul in a loop or branch whose count is not known, or
      one that is not float32 x float32.
  """
  from jax.extend import core  # pylint: disable=g-import-not-at-top

  found = []
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == "dot_general":
      lhs, rhs = (v.aval for v in eqn.invars)
      if {str(lhs.dtype), str(rhs.dtype)} != {"float32"}:
        raise ValueError(f"A {lhs.dtype} x {rhs.dtype} matmul: "
                         "tools/bench_matmuls.py times float32 ones only.")
      found.append(Matmul(tuple(lhs.shape), tuple(rhs.shape),
                          eqn.params["dimension_numbers"]))
    for sub in core.jaxprs_in_params(eqn.params):
      inner = collect(sub)
      if inner and eqn.primitive.name in ("while", "cond"):
        raise ValueError(f"Matmuls inside a {eqn.primitive.name}: how often "
                         "they run is not known.")
      found += inner * (eqn.params["length"] if eqn.primitive.name == "scan"
                        else 1)
  return found
