"""The training state: what a checkpoint holds and what the compiled step carries and donates."""

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct


class TrainState(struct.PyTreeNode):
    """step: optimizer steps taken (int32 scalar); params: the trained parameters in fp32 (the
    whole model, or only the LoRA factors); opt_state: optax state (same dtype as params)."""

    step: jax.Array
    params: Any
    opt_state: Any

    @classmethod
    def create(cls, params: Any, optimizer) -> "TrainState":
        return cls(step=jnp.zeros((), jnp.int32), params=params, opt_state=optimizer.init(params))

    def as_dict(self) -> dict:
        return {"step": self.step, "params": self.params, "opt_state": self.opt_state}

    @classmethod
    def from_dict(cls, tree: dict) -> "TrainState":
        return cls(step=tree["step"], params=tree["params"], opt_state=tree["opt_state"])
