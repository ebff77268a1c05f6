"""Loads a configured data set: source, article split, languages."""

import dataclasses

from data_pipeline import config as config_lib
from data_pipeline import records
from data_pipeline import sources
from data_pipeline import splits
from data_pipeline import tokenization


@dataclasses.dataclass(frozen=True)
class LoadedDataset:
  """A data set restricted to its split and languages, with its articles."""
  dataset: records.RetrievalDataset
  articles: frozenset[str]  # Pivot-language titles of the split's articles.


def _read(spec: config_lib.DatasetSpec, cfg: config_lib.DataConfig):
  info = sources.dataset_info(spec.name)
  root = sources.resolve_root(cfg.root)
  if cfg.source == "tfds":
    from data_pipeline import tfds_builders  # pylint: disable=g-import-not-at-top
    data_dir = tokenization.resolve_cache_dir(cfg.cache_dir) / "tfds"
    return tfds_builders.read_paragraphs(info, root, spec.all_languages,
                                         data_dir)
  return sources.read_paragraphs(info, root, spec.all_languages)


def load(spec: config_lib.DatasetSpec,
         cfg: config_lib.DataConfig) -> LoadedDataset:
  """Reads `spec` from the configured source and applies its split."""
  paragraphs = _read(spec, cfg)
  article_of = splits.article_of_question(paragraphs[sources.PIVOT_LANGUAGE])
  titles = splits.split_titles(
      list(article_of.values()), spec.split, cfg.train_fraction)
  selected = splits.select_articles(
      {l: paragraphs[l] for l in spec.all_languages}, article_of, titles)
  dataset = records.build_dataset(str(spec), selected)
  if dataset.num_questions == 0:
    raise ValueError(
        f"Data set {spec} holds no questions for languages "
        f"{list(spec.all_languages)}: its split is empty at "
        f"data.train_fraction={cfg.train_fraction}, or the languages hold "
        "none; check data.train, data.eval, data.train_fraction and "
        "data.languages.")
  return LoadedDataset(dataset=dataset, articles=titles)


def load_training_set(cfg: config_lib.DataConfig) -> records.RetrievalDataset:
  """Loads the training set, rejecting any overlap with the eval sets."""
  train = load(cfg.train, cfg)
  for spec in cfg.eval:
    evaluation = load(spec, cfg)
    splits.check_no_leakage(train.dataset, train.articles,
                            evaluation.dataset, evaluation.articles)
  return train.dataset
