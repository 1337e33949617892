#!/usr/bin/env bash
# Train a digitlab model with DDP on 2 nodes of a SLURM cluster, one task per GPU.
#
#   sbatch examples/cluster/sbatch.sh [more `digitlab fit` options...]
#   CONFIG=configs/lenet5.yaml sbatch examples/cluster/sbatch.sh --trainer.max_epochs 20
#
# Change --nodes, --ntasks-per-node and --gpus-per-node together (one task per GPU); the trainer's num_nodes and
# devices follow from SLURM's variables. Submit from the repository's folder (or set CONFIG to a full path): the
# run folder is lightning_logs/version_<job id> under the folder you submit from, on a file system every node sees.
#
# Preemption and the time limit: 90 s before, SLURM sends SIGUSR1 to the tasks (--signal); every task stops after the
# same batch, the run saves last.ckpt in its run folder, and global rank 0 asks SLURM to requeue the job (--requeue).
# The requeued job (same job id) resumes from that checkpoint in the same run folder by itself. Add
# --last_checkpoint_every_n_steps N to lose at most N steps if a node is lost without notice.
# The settings below the #SBATCH lines can be overridden from the environment sbatch is called in (sbatch
# passes it on), e.g. ACCELERATOR=cpu to try this script on CPUs, as the tests do (tests/test_two_nodes.py).
#
#SBATCH --job-name=digitlab
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=4
#SBATCH --gpus-per-node=4
#SBATCH --cpus-per-task=8
#SBATCH --time=04:00:00
#SBATCH --signal=SIGUSR1@90
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output=slurm-%j.out
set -euo pipefail

CONFIG=${CONFIG:-configs/lenet5.yaml}   # the run's config
ACCELERATOR=${ACCELERATOR:-gpu}         # gpu (NCCL); cpu (gloo) to try it without GPUs
STRATEGY=${STRATEGY:-ddp}
DIGITLAB=${DIGITLAB:-digitlab}          # the command, e.g. a virtual environment's bin/digitlab

# `exec`: the batch shell becomes srun, so a signal sent to the batch shell (--signal=B:SIGUSR1@90) reaches the
# tasks too (srun forwards it to them). --kill-on-bad-exit: when one task fails (a run refused, a lost node), the
# others end at once instead of waiting for it.
exec srun --kill-on-bad-exit=1 "$DIGITLAB" fit --config "$CONFIG" \
    --trainer.accelerator "$ACCELERATOR" --trainer.strategy "$STRATEGY" \
    --trainer.num_nodes "$SLURM_JOB_NUM_NODES" --trainer.devices "$SLURM_NTASKS_PER_NODE" \
    "$@"
