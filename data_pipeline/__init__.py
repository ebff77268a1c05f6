"""Data for hybrid_jax: readers, splits, tokenization and hybrid batches."""
