#!/bin/bash
# usage: run.sh NAME ADAPTER [ARGS...]
# The paper's stage-1 recipe on the demo benchmark (docs/sft_learning.md point 20): the demo mask stage
# (train_sft.json + train_sft_demo.json, 8 epochs, own answers) with the <seg> probe, starting from the shipped
# model's language model (models/model.pt as committed in 8f7c70d, bundle 0.6.0) and training its LoRA with the text and mask
# losses from the first step at 1e-4, written to $RUNS/NAME; then the test-split evaluation to $RUNS/eval_NAME.
# ARGS go to both runs, e.g. --adapter_kwargs "{'probe_norm': 'batch'}"; MASK_ARGS to the mask stage only
# (e.g. MASK_ARGS="--learning_rate 1e-4", the adapter's rate). A second call with the same NAME resumes.
set -u
NAME=$1; A=$2; shift 2
RUNS=${RUNS:-/work/runs}
cd "$(dirname "$0")/../../.." && source .venv/bin/activate
export OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE
RUN="python -m monai.bundle run --meta_file configs/metadata.json --logging_file configs/logging.conf --num_workers 0"
mkdir -p $RUNS
$RUN --config_file "['configs/train_sft.json','configs/train_sft_demo.json']" --adapter $A --output_dir $RUNS/$NAME \
  --init_checkpoint models/model.pt --semantic_probe seg --mllm_freeze_iterations 0 --mllm_learning_rate 1e-4 \
  ${MASK_ARGS:-} "$@" >> $RUNS/$NAME.log 2>&1
echo "mask rc $?" >> $RUNS/$NAME.log
$RUN --config_file configs/evaluate.json --checkpoint $RUNS/$NAME/best/model.pt --adapter $A --max_new_tokens 128 \
  --semantic_probe seg "$@" --output_dir $RUNS/eval_$NAME > $RUNS/eval_$NAME.log 2>&1
echo "eval rc $?" >> $RUNS/eval_$NAME.log
