"""Text embeddings of a micro run by a tiny random embedder with a tokenizer of its own: equal to
transformers' mean final hidden states of the texts as that tokenizer encodes them, the tasks'
over the same subsample as their representations; cached, written into the matrix file by `run`
(matrix.embedder), and computed (or reused) by `analyze --config --workdir --embedder`."""

import json
import logging
import os

import numpy as np
import pytest

from forgetting_jax.analysis.matrix_file import read_matrix_file
from forgetting_jax.matrix.run import run_pipeline
from micro_demo import TASKS, cli_overrides, copy_workspace, micro_experiment
from tiny_hf import make_tiny_model, make_tiny_tokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def embedder(tmp_path_factory):
    """A tiny random llama (width 48) with a byte-level tokenizer unlike the micro base's."""
    out = str(tmp_path_factory.mktemp("embedder"))
    tokenizer = make_tiny_tokenizer(out)
    make_tiny_model("llama", out, vocab_size=len(tokenizer), hidden_size=48, layers=2, seed=3)
    return out


def _transformers_means(model_dir, examples):
    """Mean over tokens of transformers' final hidden states, one example at a time (fp32)."""
    import torch
    import transformers

    model = transformers.AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32).eval()
    out = []
    for e in examples:
        with torch.no_grad():
            hidden = model(input_ids=torch.as_tensor(e.ids[None], dtype=torch.long),
                           output_hidden_states=True).hidden_states[-1][0]
        out.append(hidden.double().numpy().mean(0))
    return np.array(out)


@pytest.mark.slow
def test_text_embeddings_of_a_micro_run_and_analyze(micro_matrix, embedder, tmp_path, caplog):
    from forgetting_jax.data.examples import encode_records
    from forgetting_jax.matrix.representations import represented_examples
    from forgetting_jax.matrix.upstream import load_upstream, load_upstream_records
    from forgetting_jax.train.base import base_model
    from forgetting_jax.train.base import tokenizer as cached_tokenizer
    from forgetting_jax.train.inputs import task_examples

    workdir = copy_workspace(micro_matrix[0], str(tmp_path / "W"))
    config = micro_experiment(**{"matrix.embedder": embedder})
    with caplog.at_level(logging.INFO, logger="forgetting_jax.run"):
        summary = run_pipeline(config, workdir, analyze=False)
    assert summary.trained == [] and sorted(summary.reused_rows) == sorted(TASKS)
    assert len([r for r in caplog.records if "with the embedder" in r.getMessage()]) == 2  # upstream, tasks
    data = read_matrix_file(summary.matrix_path)
    assert data["example_text_embeddings"].shape == (50, 48) and data["task_text_embeddings"].shape == (3, 48)

    # the reference: the texts (records of the base tokenizer's chunks) as the embedder's tokenizer encodes them
    base_tok = cached_tokenizer(base_model(config, workdir).tokenizer_dir)
    emb_tok = cached_tokenizer(embedder)
    records = load_upstream_records(config.matrix, base_tok)
    assert [r["id"] for r in records] == data["example_ids"]
    examples = encode_records(emb_tok, records[:6], int(config.matrix.max_length))
    upstream = load_upstream(config.matrix, base_tok)[:6]
    assert any(len(e) != len(u) for e, u in zip(examples, upstream))  # another tokenizer indeed
    np.testing.assert_allclose(data["example_text_embeddings"][:6], _transformers_means(embedder, examples),
                               rtol=1e-4, atol=1e-4)
    i = list(TASKS).index("uppercase")
    base_train = task_examples(config.data, "uppercase", base_tok)["train"]
    ids = [e.id for e in represented_examples(base_train, int(config.matrix.task_examples))]
    by_id = {e.id: e for e in task_examples(config.data, "uppercase", emb_tok)["train"]}
    want = _transformers_means(embedder, [by_id[k] for k in ids]).mean(0)
    np.testing.assert_allclose(data["task_text_embeddings"][i], want, rtol=1e-4, atol=1e-4)
    assert len(os.listdir(os.path.join(workdir, "matrix", "text_embeddings", "tasks"))) == 3

    # analyze --config --workdir --embedder: the same embeddings, reused from the cache
    from documented import run_cli

    out = tmp_path / "analysis"
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="forgetting_jax"):
        code, _ = run_cli(["forgetting-jax", "analyze", f"--config={ROOT}/configs/demo.py", f"--workdir={workdir}",
                           f"--output={out}", f"--embedder={embedder}", "--max_rank=2"] + cli_overrides())
    assert code == 0, caplog.text
    assert not [r for r in caplog.records if "with the embedder" in r.getMessage()]  # reused
    result = json.loads((out / "similarity.json").read_text())
    assert result["matrix"] == summary.matrix_path
    assert set(result["measures"]) == {"representation_cosine", "text_embedding_cosine"}
    text = result["measures"]["text_embedding_cosine"]
    assert text["count"] == 150 and set(text["per_task"]) == set(TASKS)
    assert (out / "similarity.png").stat().st_size > 1000


def test_the_report_shows_similarity_and_the_mean_baselines(micro_matrix):
    """`run`'s report: item-only and task-only R^2 in the fit table, the "Similarity and forgetting"
    table from the analysis' similarity.json (the base model's representations are in the file)."""
    _, summary = micro_matrix
    with open(summary.report_path, encoding="utf-8") as f:
        report = f.read()
    analysis_dir = os.path.join(os.path.dirname(summary.report_path), "analysis")
    with open(os.path.join(analysis_dir, "similarity.json"), encoding="utf-8") as f:
        result = json.load(f)
    cosine = result["measures"]["representation_cosine"]
    assert cosine["count"] == 150 and result["r2"]["item_only"] == summary.analysis["r2"]["item_only"]
    assert "| item only (each example's mean over tasks) |" in report and "| task only" in report
    section = report.split("## Similarity and forgetting")[1].split("\n## ")[0]
    assert f"| representation cosine | {cosine['pearson']:+.3f} | {cosine['spearman']:+.3f} | 150 |" in section
    assert "OLMo-7B with OpenAI embeddings 0.158 / 0.233" in section and "analysis/similarity.png" in section
    assert os.path.getsize(os.path.join(analysis_dir, "similarity.png")) > 1000
