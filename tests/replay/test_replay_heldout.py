"""replay.heldout_file: a held-out set of its own (read in the upstream format; the demo corpus's
is lm), scored by the base once; every scored upstream example may then be replayed, and the plain
run's model scores both its rows from one training run."""

import glob
import json
import os

import numpy as np
import pytest

from forgetting_jax.replay.experiment import run_replay
from micro_demo import copy_workspace, micro_experiment

pytestmark = pytest.mark.slow

TEXTS = ["The river ran past the old mill and the children counted the boats.",
         "A small lamp on the desk lit the pages of the open notebook.",
         "Every morning the baker set out twelve loaves on the front shelf.",
         "The committee met on Tuesday to discuss the new library hours.",
         "Snow covered the hills, and the road to the village was closed.",
         "She tuned the violin slowly, listening to each string in turn.",
         "The map showed three trails that met at the top of the ridge.",
         "Rain tapped on the window while the kettle began to whistle."]


def test_a_heldout_file_measures_forgetting_and_the_whole_pool_is_replayed(micro_matrix, tmp_path):
    workdir = copy_workspace(micro_matrix[0], str(tmp_path / "W"))
    path = tmp_path / "heldout.jsonl"
    path.write_text("".join(json.dumps({"id": f"h{i}", "text": t}) + "\n" for i, t in enumerate(TEXTS)))
    config = micro_experiment(**{"replay.heldout_file": str(path), "replay.strategies": ("none", "random"),
                                 "replay.test_tasks": ("divide",)})
    results = run_replay(config, workdir)
    s = results["settings"]
    assert s["heldout"] == str(path) and s["num_heldout"] == len(TEXTS) and s["pool"] == 50
    for strategy in ("none", "random"):
        assert np.isfinite(results["forgetting"][strategy]["divide"])
    rows = os.path.join(workdir, "replay", "heldout", "rows")
    assert glob.glob(os.path.join(rows, "divide.none", "*.npz")) and glob.glob(os.path.join(rows, "divide.random",
                                                                                            "*.npz"))
    # the plain run trained once for both rows, and its model went away (matrix.keep_models is off)
    plain = [os.path.dirname(p) for p in glob.glob(os.path.join(workdir, "tasks", "divide", "*", "run.json"))
             if "mixture" not in json.load(open(p))]
    assert len(plain) == 1 and not os.path.isdir(os.path.join(plain[0], "model"))
    with open(os.path.join(workdir, "replay", "table.md")) as f:
        assert "from heldout.jsonl" in f.read()
    again = run_replay(config, workdir)
    assert again["trained"] == [] and again["forgetting"] == results["forgetting"]


def test_a_missing_heldout_file_is_named(micro_matrix, tmp_path):
    workdir = copy_workspace(micro_matrix[0], str(tmp_path / "W"))
    config = micro_experiment(**{"replay.heldout_file": str(tmp_path / "absent.jsonl"),
                                 "replay.strategies": ("none",), "replay.test_tasks": ("divide",)})
    with pytest.raises(ValueError, match="replay.heldout_file .*absent.jsonl.*no such file"):
        run_replay(config, workdir)
