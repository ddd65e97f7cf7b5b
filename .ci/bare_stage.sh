#!/usr/bin/env bash
# CI's first stage: in a virtualenv holding only `pip install -e .` (no extras, no torch), run
# every command once on tiny inputs, as a new user would on a fresh machine.
#   .ci/bare_stage.sh            (from any directory; uses the active python)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
export HF_HUB_OFFLINE=1 FJ_PROGRESS=0
step() { echo "== $*"; }

step "no torch in this environment"
! python -c "import torch" 2>/dev/null

step "help"
forgetting-jax --help >"$W/help.txt"
for command in run score generate analyze predict inspect pretrain finetune replay forecast; do
  forgetting-jax "$command" --help >"$W/help_$command.txt"
  grep -q -- "--" "$W/help_$command.txt" || { echo "forgetting-jax $command --help lists no flags"; exit 1; }
done

step "micro run of the demo config (4 tasks, 64 upstream examples, short runs)"
MICRO=(--config=configs/demo.py --workdir="$W/demo" --config.data.tasks=add,subtract,reverse_word,uppercase
       --config.matrix.num_upstream=64 --config.pretrain.steps=8 --config.pretrain.max_examples=256
       --config.train.steps=4 --config.train.eval_every=2 --config.predict.rep_dot_steps=100)
forgetting-jax run "${MICRO[@]}" 2>"$W/run.log" || { tail -30 "$W/run.log"; exit 1; }
test -f "$W/demo/matrix/forgetting.npz" && test -f "$W/demo/report.md" && test -f "$W/demo/report.html"
MODEL=$(ls -d "$W"/demo/base/*/model | head -1)

step "pretrain and finetune (the run's base and run, reused)"
forgetting-jax pretrain "${MICRO[@]}" 2>"$W/pretrain.log" || { tail -30 "$W/pretrain.log"; exit 1; }
grep -q "reusing it" "$W/pretrain.log"
forgetting-jax finetune "${MICRO[@]}" --task=add 2>"$W/finetune.log" || { tail -30 "$W/finetune.log"; exit 1; }

step "replay (one new task; the final code's protocol and baselines)"
forgetting-jax replay "${MICRO[@]}" --config.replay.test_tasks=divide --strategies=none,random,gt_mir:4,ppl_median,grad_prod_neg \
  --config.replay.k=4 --config.replay.num_heldout=16 --config.replay.gradient_dim=64 2>"$W/replay.log" \
  || { tail -30 "$W/replay.log"; exit 1; }
python -c "import json, sys; r = json.load(open(sys.argv[1])); assert r['settings']['protocol'] == 'final' and len(r['summary']) == 5" "$W/demo/replay/results.json"

step "forecast (a task outside the matrix, fine-tuned and exported; then before fine-tuning) and replay by it"
forgetting-jax finetune "${MICRO[@]}" --task=divide 2>"$W/finetune_divide.log" || { tail -30 "$W/finetune_divide.log"; exit 1; }
forgetting-jax forecast --matrix="$W/demo/experiments/demo/forgetting.npz" --model="$W/demo/tasks/divide" --k=8 \
  --verify=4 --output="$W/forecasts/divide.jsonl" 2>"$W/forecast.log" || { tail -30 "$W/forecast.log"; exit 1; }
python -c "import json, sys; rows = [json.loads(l) for l in open(sys.argv[1])]; s = json.load(open(sys.argv[2])); assert len(rows) == 64 and sum('observed' in r for r in rows) == 16 and s['verify']['n'] == 4" "$W/forecasts/divide.jsonl" "$W/forecasts/divide.summary.json"
python - "$W/divide_train.jsonl" <<'PY'
import json, sys
from forgetting_jax.data.demo.tasks import suite_records
with open(sys.argv[1], "w") as f:
    f.writelines(json.dumps(r) + "\n" for r in suite_records(["divide"], "train"))
PY
forgetting-jax forecast --matrix="$W/demo/experiments/demo/forgetting.npz" --task_data="$W/divide_train.jsonl" \
  --output="$W/before.jsonl" 2>"$W/forecast_before.log" || { tail -30 "$W/forecast_before.log"; exit 1; }
forgetting-jax finetune "${MICRO[@]}" --task=divide --config.replay.weights_file="$W/forecasts/{task}.jsonl" \
  --config.replay.ratio=0.25 2>"$W/finetune_replay.log" || { tail -30 "$W/finetune_replay.log"; exit 1; }
grep -q "replay by" "$W/finetune_replay.log" || { tail -30 "$W/finetune_replay.log"; exit 1; }

step "score"
forgetting-jax score --model="$MODEL" --data=tests/fixtures/data/lm.jsonl --format=lm --output="$W/lm.npz"
forgetting-jax score --model="$MODEL" --data=tests/fixtures/data/chat.jsonl --format=chat --output="$W/chat.npz"
python -c "import numpy as np, sys; z = np.load(sys.argv[1]); assert len(z['nll']) == len(z['example_id']) > 0" "$W/lm.npz"

step "a .gguf model without the gguf extra: one line naming the extra"
printf 'GGUF' >"$W/model.gguf"
if forgetting-jax score --model="$W/model.gguf" --data=tests/fixtures/data/lm.jsonl --output="$W/g.npz" 2>"$W/err.txt"; then
  echo "score of a .gguf model without the gguf package succeeded"; exit 1
fi
grep -q "forgetting_jax\[gguf\]" "$W/err.txt" || { cat "$W/err.txt"; exit 1; }

step "generate"
forgetting-jax generate --model="$MODEL" --data=tests/fixtures/data/lm.jsonl --format=lm --max_new_tokens=4 \
  --output="$W/generated.jsonl"
python -c "import json, sys; rows = [json.loads(l) for l in open(sys.argv[1])]; assert rows and all(set(r) == {'id', 'completion'} for r in rows)" "$W/generated.jsonl"

step "analyze"
forgetting-jax analyze --matrix="$W/demo/matrix/forgetting.npz" --output="$W/analysis"
python -c "import json, sys; r = json.load(open(sys.argv[1])); assert 'representation_cosine' in r['measures'] and 'item_only' in r['r2']" "$W/analysis/similarity.json"

step "predict"
forgetting-jax predict --matrix="$W/demo/matrix/forgetting.npz" --test_tasks=add --k=8 --seeds=2 \
  --methods=additive,multiplicative,als,knn,rep_sim,rep_dot --rep_dot_steps=100 --output="$W/predict.json"
python -c "import json, sys; r = json.load(open(sys.argv[1])); assert set(r['methods']) >= {'additive', 'knn', 'rep_dot'} and r['best']['rmse']" "$W/predict.json"
grep -q "## Predicting forgetting" "$W/demo/report.md"

step "inspect"
forgetting-jax inspect --source=flan --data=tests/fixtures/data/flan.jsonl --json >"$W/inspect.json"
python -c "import json, sys; r = json.load(open(sys.argv[1])); assert r['records'] > 0 and r['ids_unique'] in (True, False)" "$W/inspect.json"
forgetting-jax inspect --source=lm --data=tests/fixtures/data/lm.jsonl --model="$MODEL" >/dev/null
if forgetting-jax inspect --source=flan --data="$W/missing.jsonl" 2>"$W/err.txt"; then
  echo "inspect of a missing file succeeded"; exit 1
fi
grep -q "missing.jsonl" "$W/err.txt"
echo "bare stage passed"
