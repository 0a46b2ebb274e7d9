#!/bin/bash
# usage: queue.sh "S1 A1" "S2 A2" ... -- run recipes one after another, each once its text stage has ended
for job in "$@"; do
  set -- $job
  while pgrep -f "output_dir /work/runs/text20_s$1\$" > /dev/null; do sleep 30; done
  /work/runs/recipe.sh $1 $2 /work/runs/text20_s$1/checkpoints/checkpoint_final.pt
done
