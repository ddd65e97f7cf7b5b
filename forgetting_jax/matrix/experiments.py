"""Each experiment's own matrix, analysis and report: W/experiments/<name>/.

An experiment is what one config computes: the rows of its tasks (each row's fingerprint covers
its fine-tuning run and the scoring) on one set of base scores. Its fingerprint is that of
{task: row fingerprint} and the base scores' fingerprint (with matrix.metric=exact_match, also
the answer set's and matrix.em_columns), so any setting that changes a row
(say train.lr) makes another experiment, and settings that change nothing (mesh, batching of the
scorer) do not.

Its files (experiment.json, forgetting.npz, analysis/, report.md, replay/): WORKSPACE.md. <name>
is `task_filename(config.name)`. When experiments/<name>/ belongs to another fingerprint (the same
config name with other settings), this experiment goes to experiments/<name>-<fp8>/ (<fp8>: the
first 8 characters of its fingerprint) with a warning; nothing is overwritten.

W/matrix/forgetting.npz and W/report.md are copies of the most recent run's (written atomically,
for the documented paths); the experiment's own files are the ones that stay.
"""

import dataclasses
import json
import logging
import os
import re

from forgetting_jax.utils.fingerprint import fingerprint, task_filename
from forgetting_jax.utils.io import copy_file, move_aside, write_json, write_text
from forgetting_jax.utils.runtime import is_main

log = logging.getLogger("forgetting_jax.run")

EXPERIMENT_FILE = "experiment.json"


@dataclasses.dataclass(frozen=True)
class Experiment:
    """Where one experiment's files live in the workspace."""

    name: str  # the directory's name under W/experiments
    directory: str
    fingerprint: str

    @property
    def matrix_path(self) -> str:
        return os.path.join(self.directory, "forgetting.npz")

    @property
    def report_path(self) -> str:
        return os.path.join(self.directory, "report.md")

    @property
    def replay_dir(self) -> str:
        return os.path.join(self.directory, "replay")


def experiment_fingerprint(row_fingerprints: dict[str, str], base_scores_fingerprint: str,
                           answers: dict | None = None) -> str:
    """Fingerprint of an experiment: its tasks' row fingerprints {task: fp} and its base scores';
    with matrix.metric=exact_match, `answers` too ({"answers": the answer set's fingerprint,
    "em_columns": matrix.em_columns}: the matrix's columns)."""
    inputs = {"rows": row_fingerprints, "base_scores": base_scores_fingerprint}
    return fingerprint(inputs if answers is None else dict(inputs, answers=answers))


def _stored_fingerprint(directory: str) -> str | None:
    """The fingerprint in directory/experiment.json; None when there is none (a damaged file is
    moved aside with a warning and reads as none)."""
    path = os.path.join(directory, EXPERIMENT_FILE)
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            return str(json.load(f)["fingerprint"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        if is_main():
            move_aside(path, f"cannot be read: {type(err).__name__}: {err}", log)
        return None


def resolve_experiment(workdir: str, config_name: str, fp: str) -> Experiment:
    """The directory of the experiment `config_name` of fingerprint `fp`: experiments/<name>/
    when it is free or this experiment's, else experiments/<name>-<fp[:8]>/ (with a warning)."""
    name = task_filename(config_name or "experiment")
    root = os.path.join(workdir, "experiments")
    for candidate in (name, f"{name}-{fp[:8]}", f"{name}-{fp}"):
        stored = _stored_fingerprint(os.path.join(root, candidate))
        if stored is None or stored == fp:
            if candidate != name:
                log.warning("experiments/%s holds experiment %r with other settings; this one (fingerprint %s) "
                            "is written to experiments/%s", name, config_name, fp, candidate)
            return Experiment(candidate, os.path.join(root, candidate), fp)
    raise ValueError(f"experiments/{name}-{fp} holds another experiment's files")  # a 64-bit collision


def record_experiment(experiment: Experiment, config_name: str, row_fingerprints: dict[str, str],
                      base_scores_fingerprint: str, answers: dict | None = None) -> None:
    """Writes experiment.json (process 0): what the experiment's fingerprint covers."""
    if is_main():
        record = {"name": config_name, "fingerprint": experiment.fingerprint,
                  "base_scores": base_scores_fingerprint, "rows": dict(row_fingerprints)}
        write_json(os.path.join(experiment.directory, EXPERIMENT_FILE),
                   record if answers is None else dict(record, answers=dict(answers)))


def publish_matrix(experiment: Experiment, workdir: str) -> str:
    """Copies the experiment's matrix to W/matrix/forgetting.npz (process 0); returns that path."""
    path = os.path.join(workdir, "matrix", "forgetting.npz")
    if is_main():
        copy_file(experiment.matrix_path, path)
    return path


_RELATIVE_LINK = re.compile(r"(!?\[[^\]]*\]\()(?![a-zA-Z][a-zA-Z0-9+.-]*:|/|#)")


def relocate_links(markdown: str, prefix: str) -> str:
    """`markdown` with every relative link target (figures, files) prefixed by `prefix/`."""
    return _RELATIVE_LINK.sub(lambda m: m.group(1) + prefix.rstrip("/") + "/", markdown)


def publish_report(report_path: str, workdir: str) -> str | None:
    """Copies the report at `report_path` (inside the workspace) to W/report.md with its links
    made relative to W (process 0); returns that path (None when there is no report)."""
    if not os.path.isfile(report_path):
        return None
    path = os.path.join(workdir, "report.md")
    if is_main():
        with open(report_path, encoding="utf-8") as f:
            text = relocate_links(f.read(), os.path.relpath(os.path.dirname(report_path), workdir))
        write_text(path, text)
    return path


def publish_file(src: str, dst: str) -> None:
    """Copies one of the experiment's files to its most-recent place in W (process 0)."""
    if is_main():
        copy_file(src, dst)
