"""The two replay protocols (replay.protocol): what a replay experiment's runs are.

  final    as the paper's final code runs replay (AuCson/low-rank-forgetting: run_llm_ocl.py,
           data_utils/replay_helper.py, configs/llm/llm_defaults.yaml):
             - a replay run trains floor(train.steps (1 + r)) optimizer steps (the final code
               extends the stream: `max_steps = int(max_steps * (1 + mixture_ratio))`), so it sees
               about the task examples of a run without replay;
             - every run of the experiment, the plain one (strategy none) included, keeps the
               parameters of its last step (the final code's Trainer has no best-step selection);
             - 10,000 upstream examples held out (`heldout_num`), or at most half of the scored
               examples when there are fewer than 20,000.
  project  this project's equal-steps variant: every run trains train.steps steps (a replay run
           ceil(train.steps (1 + r)) with replay.scale_steps), each keeps the step train.result
           names (by default its best validation step), 1,000 held out (at most half).

replay.num_heldout > 0 overrides the held-out size of either protocol. results.json records the
protocol and the numbers it gave (replay_steps, num_heldout, result step).
"""

import dataclasses
import math
from fractions import Fraction

from forgetting_jax.experiment import Experiment

HELDOUT = {"final": 10_000, "project": 1_000}


@dataclasses.dataclass(frozen=True)
class Protocol:
    """What the configured protocol makes of one experiment's runs."""

    name: str  # final | project
    scale_steps: bool  # project's replay.scale_steps (final: always extends the steps)
    result: str  # the step every run of the experiment keeps: best | last (train.result)

    def replay_steps(self, steps: int, ratio: Fraction) -> int:
        """The optimizer steps of a replay run given train.steps."""
        if self.name == "final":
            return max(1, math.floor(steps * (1 + ratio)))
        return math.ceil(steps * (1 + ratio)) if self.scale_steps else int(steps)

    def num_heldout(self, configured: int, scored: int) -> int:
        """The held-out size: replay.num_heldout when positive, else the protocol's (at most half of
        the `scored` upstream examples)."""
        return int(configured) if configured > 0 else min(HELDOUT[self.name], scored // 2)

    def run_config(self, config: Experiment) -> Experiment:
        """The config every fine-tuning run of the experiment is planned with (train.result)."""
        if config.train.result == self.result:
            return config
        return dataclasses.replace(config, train=dataclasses.replace(config.train, result=self.result))

    def describe(self) -> dict:
        return {"protocol": self.name, "result_step": self.result,
                **({"scale_steps": self.scale_steps} if self.name == "project" else {})}


def protocol(config: Experiment) -> Protocol:
    """The Protocol of config.replay."""
    rc = config.replay
    if rc.protocol == "final":
        return Protocol("final", True, "last")
    if rc.protocol == "project":
        return Protocol("project", bool(rc.scale_steps), str(config.train.result))
    raise ValueError(f"replay.protocol {rc.protocol!r}: not one of final, project")
