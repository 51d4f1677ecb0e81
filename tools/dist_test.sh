#!/usr/bin/env bash
# Test a checkpoint with N processes on this node through torchrun.
#
#   tools/dist_test.sh CONFIG CHECKPOINT GPUS [test.py ARGS...]
#
# GPUS is the number of processes on this node (one per GPU; on a machine
# without CUDA, CPU processes talking over gloo). Several nodes: run it on
# each with NNODES, NODE_RANK (0 .. NNODES-1), MASTER_ADDR (the address of
# node 0) and PORT set alike. PYTHON picks the interpreter (default: python).
set -euo pipefail

usage() {
    echo "usage: $(basename "$0") CONFIG CHECKPOINT GPUS [test.py ARGS...]" >&2
    echo "  env: NNODES=${NNODES:-1} NODE_RANK=${NODE_RANK:-0}" \
        "MASTER_ADDR=${MASTER_ADDR:-127.0.0.1} PORT=${PORT:-29500}" >&2
    exit 2
}

if [[ $# -lt 3 ]]; then
    usage
fi
CONFIG=$1
CHECKPOINT=$2
GPUS=$3
shift 3
if [[ ! "$GPUS" =~ ^[1-9][0-9]*$ ]]; then
    echo "error: GPUS must be a positive number of processes, got '$GPUS'" >&2
    usage
fi
if [[ ! -f "$CONFIG" ]]; then
    echo "error: config file '$CONFIG' does not exist" >&2
    exit 2
fi

NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-"127.0.0.1"}
PYTHON=${PYTHON:-python}
TOOLS=$(cd "$(dirname "$0")" && pwd)

PYTHONPATH="$(dirname "$TOOLS")${PYTHONPATH:+:$PYTHONPATH}" \
exec "$PYTHON" -m torch.distributed.run \
    --nnodes="$NNODES" \
    --node_rank="$NODE_RANK" \
    --master_addr="$MASTER_ADDR" \
    --nproc_per_node="$GPUS" \
    --master_port="$PORT" \
    "$TOOLS/test.py" \
    "$CONFIG" \
    "$CHECKPOINT" \
    --launcher pytorch "$@"
