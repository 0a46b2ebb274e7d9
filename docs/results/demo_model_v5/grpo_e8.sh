#!/bin/bash
# GRPO demo epoch on the seed-0 semantic (answer_text) SFT model: the shipped model of this recipe; then its test evaluation
cd /work/main && source .venv/bin/activate
export OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE
R=/work/runs; OUT=$R/grpo_e8_s0
python -m monai.bundle run --meta_file configs/metadata.json --logging_file configs/logging.conf --config_file "['configs/train_grpo.json','configs/train_grpo_demo.json']" --num_workers 0 --init_checkpoint $R/mask_semantic_e8_s0/best/model.pt --output_dir $OUT --ckpt_dir $OUT/best > $OUT.log 2>&1
echo "grpo rc $?" >> $OUT.log
python -m monai.bundle run --meta_file configs/metadata.json --logging_file configs/logging.conf \
  --config_file configs/evaluate.json --checkpoint $OUT/best/model.pt --max_new_tokens 128 --num_workers 0 \
  --output_dir $R/eval_grpo_e8_s0 > $R/eval_grpo_e8_s0.log 2>&1
echo "grpo e8 s0 done rc $? $(date)" >> $R/pipeline.log
