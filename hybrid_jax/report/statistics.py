"""Confidence intervals and paired tests over questions, for macro averages.

A setting's headline number is a macro average: the mean over tasks (query
languages, or language pairs) of the mean over each task's queries. Queries
are not independent across tasks: the same question id is asked in every
language. So the unit of resampling is the question id: a bootstrap
resample draws ids with replacement and every task keeps the queries of the
drawn ids (with their multiplicity), and a paired permutation test swaps
the two models' values of whole ids.

Values come as a `[tasks, ids]` array, NaN where a task has no query of that
id (or the query has no value, like the rank distance of a question with
one relevant candidate).
"""

import numpy as np

CONFIDENCE = 0.95
BOOTSTRAP_SAMPLES = 2000
PERMUTATIONS = 10000
SEED = 0  # Of every resample: the same files give the same report.
_CHUNK = 1000  # Permutations drawn at once (bounds the memory).


def task_means(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
  """Per-task weighted means [samples, tasks] of `values` [tasks, ids],
  for each row of id weights [samples, ids]; NaN for a task with no
  weighted value."""
  present = np.isfinite(values)
  total = weights @ np.where(present, values, 0.0).T
  count = weights @ present.T.astype(float)
  with np.errstate(invalid="ignore", divide="ignore"):
    return np.where(count > 0, total / np.maximum(count, 1e-300), np.nan)


def macro(means: np.ndarray) -> np.ndarray:
  """The mean over tasks (last axis) of the tasks that have a value."""
  present = np.isfinite(means)
  total = np.where(present, means, 0.0).sum(axis=-1)
  count = present.sum(axis=-1)
  with np.errstate(invalid="ignore", divide="ignore"):
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def point_means(values: np.ndarray) -> np.ndarray:
  """Per-task means [tasks] with every id counted once."""
  return task_means(values, np.ones((1, values.shape[1])))[0]


def bootstrap_weights(num_ids: int, samples: int = BOOTSTRAP_SAMPLES,
                      seed: int = SEED) -> np.ndarray:
  """[samples, num_ids] multiplicities of ids drawn with replacement.

  A task none of whose ids is drawn has no mean in that resample and drops
  out of its macro average (rare: tasks have hundreds of ids).
  """
  if not num_ids:
    return np.zeros((samples, 0))
  rng = np.random.default_rng(seed)
  return rng.multinomial(num_ids, np.full(num_ids, 1.0 / num_ids),
                         size=samples).astype(float)


def interval(samples: np.ndarray,
             confidence: float = CONFIDENCE) -> tuple[float, float]:
  """The percentile interval of bootstrap `samples` (NaNs dropped)."""
  finite = samples[np.isfinite(samples)]
  if not finite.size:
    return (float("nan"), float("nan"))
  tail = 100 * (1 - confidence) / 2
  low, high = np.percentile(finite, [tail, 100 - tail])
  return (float(low), float(high))


def paired_permutation_p(a: np.ndarray, b: np.ndarray,
                         permutations: int = PERMUTATIONS,
                         seed: int = SEED) -> float:
  """Two-sided p-value of macro(a) - macro(b) under the null that the two
  models' values of each question id are exchangeable.

  `a` and `b` are [tasks, ids] values of the same queries. Swapping the
  models' values of an id flips the sign of its contribution to the
  difference of the macro averages, so the test draws random signs per id.
  The p-value counts the observed difference as one of the permutations.
  """
  if not np.array_equal(np.isfinite(a), np.isfinite(b)):
    raise ValueError("A paired test needs values of the same queries.")
  present = np.isfinite(a)
  count = present.sum(axis=1, keepdims=True)
  used = count[:, 0] > 0
  share = np.where(present, (a - b) / np.maximum(count, 1), 0.0)[used]
  contribution = share.sum(axis=0) / max(int(used.sum()), 1)  # [ids].
  difference = abs(contribution.sum())
  tolerance = 1e-9 * max(difference, np.abs(contribution).sum(), 1e-300)
  rng = np.random.default_rng(seed)
  extreme = 0
  for start in range(0, permutations, _CHUNK):
    signs = rng.choice((-1.0, 1.0), size=(
        min(_CHUNK, permutations - start), contribution.size))
    extreme += int((np.abs(signs @ contribution) >=
                    difference - tolerance).sum())
  return float((1 + extreme) / (1 + permutations))


def holm(p_values: list[float]) -> list[float]:
  """Holm-Bonferroni adjusted p-values of one family of tests."""
  order = np.argsort(p_values, kind="stable")
  adjusted = np.empty(len(p_values))
  running = 0.0
  for position, i in enumerate(order):
    running = max(running, min(1.0, (len(p_values) - position) * p_values[i]))
    adjusted[i] = running
  return adjusted.tolist()
