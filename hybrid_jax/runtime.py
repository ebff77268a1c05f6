"""Process-wide setup of a run: hosts and TensorFlow."""

import jax


def setup(distributed: bool) -> None:
  """Prepares this process for a run.

  Joins the other hosts (if `distributed`) and keeps TensorFlow (used for
  tf.data only) off accelerators.
  """
  if distributed:
    jax.distributed.initialize()
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.config.set_visible_devices([], "GPU")
