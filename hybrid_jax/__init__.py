"""hybrid_jax: hybrid-batch contrastive training of multilingual retrievers.

Importing the package first makes the process reuse freed host memory
(`host_memory`), which the CPU training step needs to run fast. This tunes
glibc malloc and switches JAX's asynchronous CPU dispatch off.
"""

from hybrid_jax import host_memory

host_memory.keep_freed_memory()
