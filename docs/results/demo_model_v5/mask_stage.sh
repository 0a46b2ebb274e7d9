#!/bin/bash
# usage: mask_stage.sh SEED ADAPTER NAME [ARGS...]
# The demo mask stage (train_sft.json + train_sft_demo.json) on the final checkpoint of the text stage
# $RUNS/text20_sSEED and on its own answers, written to $RUNS/mask_NAME_sSEED, then the test-split evaluation to
# $RUNS/eval_NAME_sSEED. ARGS go to both runs (e.g. --semantic_probe seg); MASK_ARGS to the mask stage only
# (e.g. MASK_ARGS="--max_epochs 4", the length of the mask stage before point 18).
# The own answers depend only on the language model: the first run of a seed generates them, later runs reuse them.
set -u
S=$1; A=$2; NAME=$3; shift 3
RUNS=${RUNS:-/work/runs}; OUT=$RUNS/mask_${NAME}_s$S
cd "$(dirname "$0")/../../.." && source .venv/bin/activate
export OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE
RUN="python -m monai.bundle run --meta_file configs/metadata.json --logging_file configs/logging.conf --num_workers 0"
mkdir -p $OUT
[ -f $RUNS/own_s$S.json ] && [ ! -f $OUT/own_answers.json ] && cp $RUNS/own_s$S.json $OUT/own_answers.json
$RUN --config_file "['configs/train_sft.json','configs/train_sft_demo.json']" --adapter $A --seed $S \
  --output_dir $OUT --init_checkpoint $RUNS/text20_s$S/checkpoints/checkpoint_final.pt ${MASK_ARGS:-} "$@" > $OUT.log 2>&1
echo "mask rc $?" >> $OUT.log
[ -f $RUNS/own_s$S.json ] || cp $OUT/own_answers.json $RUNS/own_s$S.json
$RUN --config_file configs/evaluate.json --checkpoint $OUT/best/model.pt --adapter $A --max_new_tokens 128 "$@" \
  --output_dir $RUNS/eval_${NAME}_s$S > $RUNS/eval_${NAME}_s$S.log 2>&1
echo "mask_stage $S $A $NAME done rc $? $(date)" >> $RUNS/pipeline.log
