"""Training: a named device mesh, one logical-axis rule table, a compiled train step, orbax
checkpoints, and the pre-training and fine-tuning runs built from them (see `loop`)."""
