"""hybrid_jax: hybrid-batch contrastive training of multilingual retrievers."""
