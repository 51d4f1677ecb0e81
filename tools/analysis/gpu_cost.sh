#!/usr/bin/env bash
# The GPU cost table of README ("Cost per method"), in one command: runs
# tools/analysis/benchmark_overhead.py on CUDA for the configs and precisions
# of that table (random teacher weights, batch 2, 10 timed steps after 3
# warm-up), writes one JSON and one log per row into DIR, and prints the
# markdown table (tools/analysis/cost_table.py). A row that fails or runs
# past its time limit is reported and skipped; the others still run.
#
#   bash tools/analysis/gpu_cost.sh [DIR]      # DIR: $OUT, else work_dirs/gpu_cost
#
# Environment: PYTHON (default python3), ROW_TIMEOUT seconds per row
# (default 240), ROWS (space-separated row names, default all).
set -u
DIR=${1:-${OUT:-work_dirs/gpu_cost}}
PYTHON=${PYTHON:-python3}
ROW_TIMEOUT=${ROW_TIMEOUT:-240}
if ! "$PYTHON" -c 'import sys, torch; sys.exit(not torch.cuda.is_available())' \
    2>/dev/null; then
  echo "gpu_cost.sh: $PYTHON has no torch that sees a CUDA device; this" \
    "table is measured on a GPU (set PYTHON to a CUDA torch's python)." >&2
  exit 1
fi
mkdir -p "$DIR"

SEG=(--size 512 1024)
DET=(--size 800 1344)
declare -A ROW=(
  [mlp]="configs/mlp/mlp_backbone_pspnet-r101_pspnet-r18_80k_cityscapes-512x1024.py ${SEG[*]}"
  [cwd]="configs/cwd/cwd_logits_pspnet-r101_pspnet-r18_80k_cityscapes-512x1024.py ${SEG[*]}"
  [tat]="configs/tat/tat_backbone_pspnet-r101_pspnet-r18_80k_cityscapes-512x1024.py ${SEG[*]}"
  [tat_teacher_bf16]="configs/tat/tat_backbone_pspnet-r101_pspnet-r18_80k_cityscapes-512x1024.py ${SEG[*]} --teacher-dtype bfloat16"
  [fgd]="configs/fgd/fgd_fpn_retinanet-x101_retinanet-r50_2x_coco.py ${DET[*]}"
  [fgd_bf16_amp]="configs/fgd/fgd_fpn_retinanet-x101_retinanet-r50_2x_coco.py ${DET[*]} --amp-dtype bfloat16"
  [fgd_fp16_amp]="configs/fgd/fgd_fpn_retinanet-x101_retinanet-r50_2x_coco.py ${DET[*]} --amp-dtype float16"
  [fgd_teacher_bf16]="configs/fgd/fgd_fpn_retinanet-x101_retinanet-r50_2x_coco.py ${DET[*]} --teacher-dtype bfloat16 --teacher-channels-last"
)
ORDER=(mlp cwd tat tat_teacher_bf16 fgd fgd_bf16_amp fgd_fp16_amp fgd_teacher_bf16)
read -r -a WANT <<< "${ROWS:-${ORDER[*]}}"

done_rows=()
for name in "${WANT[@]}"; do
  [ -n "${ROW[$name]:-}" ] || { echo "unknown row '$name' (rows: ${ORDER[*]})"; exit 2; }
  start=$(date +%s)
  # shellcheck disable=SC2086  # the row's arguments are words
  timeout "$ROW_TIMEOUT" "$PYTHON" tools/analysis/benchmark_overhead.py ${ROW[$name]} \
    --device cuda --random-teacher --batch-size 2 --iters 10 --warmup 3 \
    --out "$DIR/$name.json" > "$DIR/$name.log" 2>&1
  rc=$?
  if [ $rc -eq 0 ]; then
    done_rows+=("$DIR/$name.json")
    echo "$name: done in $(( $(date +%s) - start )) s"
  else
    echo "$name: FAILED (exit $rc after $(( $(date +%s) - start )) s); last lines of $DIR/$name.log:"
    tail -5 "$DIR/$name.log"
  fi
done
[ ${#done_rows[@]} -gt 0 ] || exit 1
"$PYTHON" tools/analysis/cost_table.py "${done_rows[@]}" | tee "$DIR/table.md"
