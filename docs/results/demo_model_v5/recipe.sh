#!/bin/bash
# usage: recipe.sh SEED ADAPTER [TEXT_CKPT]  -- mask stage from text20_sSEED/best/model.pt, then the test-split evaluation
cd /work/main && source .venv/bin/activate
export OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE
S=$1; A=$2; R=/work/runs
OUT=$R/mask_${A}_s$S
# the own answers depend only on the language model and seed: share them between adapters
mkdir -p $OUT; [ -f $R/own_s$S.json ] && [ ! -f $OUT/own_answers.json ] && cp $R/own_s$S.json $OUT/own_answers.json
python -m monai.bundle run --meta_file configs/metadata.json --logging_file configs/logging.conf --config_file "['configs/train_sft.json','configs/train_sft_demo.json']" --num_workers 0 --adapter $A --seed $S --output_dir $OUT --init_checkpoint ${3:-$R/text20_s$S/best/model.pt} > $OUT.log 2>&1
echo "mask rc $?" >> $OUT.log
[ -f $R/own_s$S.json ] || cp $OUT/own_answers.json $R/own_s$S.json
python -m monai.bundle run --meta_file configs/metadata.json --logging_file configs/logging.conf \
  --config_file configs/evaluate.json --checkpoint $OUT/best/model.pt --adapter $A --max_new_tokens 128 --num_workers 0 \
  --output_dir $R/eval_${A}_s$S > $R/eval_${A}_s$S.log 2>&1
echo "recipe $S $A done rc $? $(date)" >> $R/pipeline.log
