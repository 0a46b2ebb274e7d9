#!/bin/bash
# usage: recipe_seg.sh SEED ADAPTER -- mask stage with the paper's <seg> probe from text20_sSEED's final checkpoint, then the test evaluation
cd /work/main && source .venv/bin/activate
export OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE
S=$1; A=$2; R=/work/runs
OUT=$R/mask_${A}seg_s$S
mkdir -p $OUT; cp $R/own_s$S.json $OUT/own_answers.json
python -m monai.bundle run --meta_file configs/metadata.json --logging_file configs/logging.conf --config_file "['configs/train_sft.json','configs/train_sft_demo.json']" --num_workers 0 --adapter $A --semantic_probe seg --seed $S --output_dir $OUT --init_checkpoint $R/text20_s$S/checkpoints/checkpoint_final.pt > $OUT.log 2>&1
echo "mask rc $?" >> $OUT.log
python -m monai.bundle run --meta_file configs/metadata.json --logging_file configs/logging.conf \
  --config_file configs/evaluate.json --checkpoint $OUT/best/model.pt --adapter $A --semantic_probe seg --max_new_tokens 128 --num_workers 0 \
  --output_dir $R/eval_${A}seg_s$S > $R/eval_${A}seg_s$S.log 2>&1
echo "recipe_seg $S $A done rc $? $(date)" >> $R/pipeline.log
