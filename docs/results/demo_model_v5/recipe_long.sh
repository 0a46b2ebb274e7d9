#!/bin/bash
# usage: recipe_long.sh SEED ADAPTER EPOCHS -- the answer_text mask stage run longer, then the test evaluation
cd /work/main && source .venv/bin/activate
export OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE
S=$1; A=$2; E=$3; R=/work/runs
OUT=$R/mask_${A}_e${E}_s$S
mkdir -p $OUT; cp $R/own_s$S.json $OUT/own_answers.json
python -m monai.bundle run --meta_file configs/metadata.json --logging_file configs/logging.conf --config_file "['configs/train_sft.json','configs/train_sft_demo.json']" --num_workers 0 --adapter $A --max_epochs $E --seed $S --output_dir $OUT --init_checkpoint $R/text20_s$S/checkpoints/checkpoint_final.pt > $OUT.log 2>&1
echo "mask rc $?" >> $OUT.log
python -m monai.bundle run --meta_file configs/metadata.json --logging_file configs/logging.conf \
  --config_file configs/evaluate.json --checkpoint $OUT/best/model.pt --adapter $A --max_new_tokens 128 --num_workers 0 \
  --output_dir $R/eval_${A}_e${E}_s$S > $R/eval_${A}_e${E}_s$S.log 2>&1
echo "recipe_long $S $A $E done rc $? $(date)" >> $R/pipeline.log
