#!/usr/bin/env bash
# Train a digitlab model with DDP on several machines without SLURM: run this script once on every machine, each
# with its own NODE_RANK (0 on the machine whose address is MASTER_ADDR), and the same other settings.
#
#   NODE_RANK=0 MASTER_ADDR=10.0.0.1 examples/cluster/torchrun.sh [more `digitlab fit` options...]   # on 10.0.0.1
#   NODE_RANK=1 MASTER_ADDR=10.0.0.1 examples/cluster/torchrun.sh [the same options]                # on the other
#
# torchrun (TorchElastic) starts NPROC_PER_NODE processes here, one per GPU, and restarts all of them, on every
# machine, up to MAX_RESTARTS times when one fails; the run then resumes by itself in its own run folder. Start
# it from the repository's folder (or give CONFIG as a full path), on a file system every machine sees: the run
# folder (lightning_logs/version_N) is written by the first process of node 0 only.
set -euo pipefail

: "${NODE_RANK:?set NODE_RANK: 0 on the MASTER_ADDR machine, 1, 2, ... on the others}"
: "${MASTER_ADDR:?set MASTER_ADDR: the address of node 0, which every machine can reach}"
MASTER_PORT=${MASTER_PORT:-29500}       # a free TCP port on node 0
NNODES=${NNODES:-2}                     # machines taking part
NPROC_PER_NODE=${NPROC_PER_NODE:-gpu}   # processes per machine: `gpu` is one per GPU, or a number
MAX_RESTARTS=${MAX_RESTARTS:-3}         # restarts of every process after one failed
CONFIG=${CONFIG:-configs/lenet5.yaml}   # the run's config
ACCELERATOR=${ACCELERATOR:-gpu}         # gpu (NCCL); cpu (gloo) to try it without GPUs
PYTHON=${PYTHON:-python}                # the Python that has digitlab, e.g. a virtual environment's bin/python

if [[ $NPROC_PER_NODE == gpu ]]; then
    NPROC_PER_NODE=$("$PYTHON" -c "import torch; print(torch.cuda.device_count())")
fi

exec "$PYTHON" -m torch.distributed.run \
    --nnodes "$NNODES" --node_rank "$NODE_RANK" --nproc_per_node "$NPROC_PER_NODE" \
    --master_addr "$MASTER_ADDR" --master_port "$MASTER_PORT" --max-restarts "$MAX_RESTARTS" \
    -m digitlab.cli fit --config "$CONFIG" \
    --trainer.accelerator "$ACCELERATOR" --trainer.strategy ddp \
    --trainer.num_nodes "$NNODES" --trainer.devices "$NPROC_PER_NODE" \
    "$@"
