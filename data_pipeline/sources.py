"""Where the data sets live: registry, data root, and loading by name.

The data root is, in order: the configured `data.root`, the environment
variable `HYBRID_JAX_DATA`, or `data/` in the repository. Under it each data
set keeps the layout of its public origin (`lareqa/xquad-r/ar.json`, ...);
`tools/prepare_data.py` fills it from the URLs below, checking sha256 sums.
"""

import dataclasses
import os
import pathlib
from typing import Mapping, Sequence

from etils import epath

from data_pipeline import lareqa
from data_pipeline import records

DATA_ENV = "HYBRID_JAX_DATA"
DEFAULT_ROOT = pathlib.Path(__file__).resolve().parent.parent / "data"

_LAREQA = "https://raw.githubusercontent.com/google-research-datasets/lareqa"


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """A registered data set: one JSON file per language."""
  name: str
  folder: str  # Relative to the data root.
  url: str  # Public origin, with `{lang}` for the language code.
  sha256: Mapping[str, str]  # Language -> checksum of its file.
  license: str

  @property
  def languages(self) -> tuple[str, ...]:
    return tuple(sorted(self.sha256))

  def path(self, root: epath.Path, lang: str) -> epath.Path:
    return root / self.folder / f"{lang}.json"


DATASETS = {
    "xquad_r": DatasetInfo(
        name="xquad_r",
        folder="lareqa/xquad-r",
        url=_LAREQA + "/9bc8c7fb6dd8d01d72a05a93c2cb96882b0d299c/xquad-r/"
        "{lang}.json",
        license="CC BY-SA 4.0",
        sha256={
            "ar": "c52922d3b8ac1ae03ed5ac38647ad59870dca3dda2beefe18ecdc30729acb69d",
            "de": "16fb0f4bf4916154b585a20c24c66074591c9718a1affe764ff4697572328949",
            "el": "163fd43ee785a30eb534ae2061e9eaa766a7ee4e8ffce5e4b422480c150f64b6",
            "en": "7b0954f39297c27a31fef610f0883337dd2907fa8699151dc922afdd0fa12ffe",
            "es": "f8e836b2d91009c4363e04315f7ede363eedbbb49c67dda60de6c4aa782f58de",
            "hi": "ea45ba8ae4513d1533b222bebdc02a90bc319c055d3aeea68584a053d2e92872",
            "ru": "7f4dff853538b9a5fcc28c070b8bb983a5c5d190ac747b8e005a1ada9cab18f1",
            "th": "c3a041864c3a9fb0b4dd91cfdf99cf36b411b3e704c58a303c97bc6dc786cfe4",
            "tr": "f3e8c13002bbce154a4578f535f7533cb70f3da08840e6b62735935baec7bd94",
            "vi": "e35926bf5cc6fc6ecbdfca49467aabeb454f08d152d7818143a906bd31dde995",
            "zh": "80c2cde7b9c2fb134c303cbb52f2ba396ead9eb0014aec43993543d2ba9e93ed",
        }),
    "mlqa_r": DatasetInfo(
        name="mlqa_r",
        folder="lareqa/mlqa-r",
        url=_LAREQA + "/5405d2a77e83d5ccb47623a3f9e5604c3f103193/mlqa-dev-r/"
        "{lang}.json",
        license="CC BY-NC 4.0",
        sha256={
            "ar": "2132fbc03208535c0fe01f2e2c5121d06f9c2aa799af93b0a719dbc105bdf137",
            "de": "ce9454dc5aa6f2d85c23cd6e49cb367fbb7c4c6e62d7f71e355c6b5dae4d0886",
            "en": "fedd9a5cc0848dda80caf84aa36f482adaae230526a3f6e9e86926a93ef3b1e4",
            "es": "70ecba276b8c96a692b120693a595d076ce94ad21d4b28311538a9fcbfe0f9d7",
            "hi": "4dd0fb3c06f737a5481d705bc1dcac7876712a5815c9265908fbb3a0696cb654",
            "vi": "9d3baff6ba03e6793b25594217265ea59a136b9733833dca8a9582a84a78ff85",
            "zh": "57f01d2fff50cf3392805635b01445339f225ad5bf28ba8443b12f8dbd1e69dc",
        }),
}

# Languages are aligned through this one: every question id of both data
# sets exists in English, which also names each question's article.
PIVOT_LANGUAGE = "en"


def dataset_info(name: str) -> DatasetInfo:
  """Looks a data set up by name, with a clear error for unknown names."""
  if name not in DATASETS:
    raise ValueError(
        f"Unknown data set {name!r}. Known data sets: {sorted(DATASETS)}.")
  return DATASETS[name]


def resolve_root(configured: str = "") -> epath.Path:
  """The data root: the configured path, else $HYBRID_JAX_DATA, else data/.

  A local path (made absolute) or a cloud URI such as gs://bucket/data.
  """
  root = epath.Path(
      configured or os.environ.get(DATA_ENV) or DEFAULT_ROOT).expanduser()
  return root if "://" in os.fspath(root) else root.resolve()


def check_languages(info: DatasetInfo, languages: Sequence[str]) -> None:
  """Raises if a language code is not one of the data set's languages."""
  unknown = sorted(set(languages) - set(info.languages))
  if unknown:
    raise ValueError(
        f"Unknown language code(s) {unknown} for data set {info.name!r}; "
        f"it has {list(info.languages)}.")


def check_files(info: DatasetInfo, root: epath.Path,
                languages: Sequence[str]) -> None:
  """Raises one clear error naming every missing file and how to get it."""
  missing = [str(info.path(root, l)) for l in languages
             if not info.path(root, l).is_file()]
  if missing:
    raise FileNotFoundError(
        f"Data set {info.name!r} is incomplete under the data root {root}: "
        f"missing {missing}. Download it with `python tools/prepare_data.py "
        f"--root={root}` (or copy it from a mirror with `--mirror=DIR`), or "
        f"point --config.data.root or ${DATA_ENV} at a folder that holds "
        f"{info.folder}/.")


def languages_to_read(info: DatasetInfo,
                      languages: Sequence[str]) -> list[str]:
  """The given languages plus the pivot language, checked."""
  languages = sorted(set(languages) | {PIVOT_LANGUAGE})
  check_languages(info, languages)
  return languages


def read_paragraphs(
    info: DatasetInfo, root: epath.Path, languages: Sequence[str]
) -> dict[str, list[records.Paragraph]]:
  """Reads the JSON files of the given languages (plus the pivot language)."""
  languages = languages_to_read(info, languages)
  check_files(info, root, languages)
  return {l: lareqa.read_file(info.path(root, l), l) for l in languages}
