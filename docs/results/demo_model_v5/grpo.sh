#!/bin/bash
# usage: grpo.sh SFT_MODEL NAME
# One demo GRPO epoch (train_grpo.json + train_grpo_demo.json) from SFT_MODEL, written to $RUNS/NAME, then the
# test-split evaluation of its best model to $RUNS/eval_NAME.
set -u
SFT=$1; NAME=$2
RUNS=${RUNS:-/work/runs}; OUT=$RUNS/$NAME
cd "$(dirname "$0")/../../.." && source .venv/bin/activate
export OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE
RUN="python -m monai.bundle run --meta_file configs/metadata.json --logging_file configs/logging.conf --num_workers 0"
$RUN --config_file "['configs/train_grpo.json','configs/train_grpo_demo.json']" --init_checkpoint $SFT \
  --output_dir $OUT --ckpt_dir $OUT/best > $OUT.log 2>&1
echo "grpo rc $?" >> $OUT.log
$RUN --config_file configs/evaluate.json --checkpoint $OUT/best/model.pt --max_new_tokens 128 \
  --output_dir $RUNS/eval_$NAME > $RUNS/eval_$NAME.log 2>&1
echo "grpo $NAME done rc $? $(date)" >> $RUNS/pipeline.log
