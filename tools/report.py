r"""Regenerates a sweep's report from its evaluation files and run records.

  python tools/report.py --workdir=DIR

DIR is a sweep's --workdir: its baseline/eval/ and every
ratio_<r>_seed_<s>/ (config.json, environment.jsonl, eval/) are read, and DIR/report/ is
rewritten (report.md, results.json, the CSVs, figures). Evaluations still
missing are left out and listed, so a partial sweep gets a partial report;
no model is loaded.
"""

from absl import app
from absl import flags

from hybrid_jax.report import build

_WORKDIR = flags.DEFINE_string("workdir", None, "The sweep's --workdir.")
flags.mark_flags_as_required(["workdir"])


def main(argv):
  del argv
  results = build.build(_WORKDIR.value)
  print(f"Wrote {_WORKDIR.value}/{build.REPORT_DIR}/ ("
        f"{', '.join(results['datasets'])}; ratios {results['ratios']}).")


if __name__ == "__main__":
  app.run(main)
