#!/usr/bin/env bash
# Sweep workers for one machine: one `digitlab sweep` worker per GPU (each sees only its own GPU through
# CUDA_VISIBLE_DEVICES), all joining one sweep whose Optuna study lives in PostgreSQL, so that workers on any number
# of machines share its trials. Run it on every machine with the same settings; it returns when all its workers do.
#
#   STORAGE=postgresql://sweeper:secret@dbhost:5432/sweeps examples/cluster/sweep-worker.sh [more options...]
#   (on SLURM, one per node: srun --ntasks-per-node=1 examples/cluster/sweep-worker.sh)
#
# More options go to every worker's `digitlab sweep` (`--trials 48`, `--data.data_dir /local/mnist`, ...); see
# docs/sweeps.md. Each trial's run folder is lightning_logs/sweeps/NAME/trial_N under the folder you start it in.
# SIGTERM or SIGINT sent to this script reaches every worker, which marks its running trial failed (it is run
# again by the next run of the sweep) and stops.
set -euo pipefail

: "${STORAGE:?set STORAGE to the PostgreSQL URL of the study, postgresql://USER:PASSWORD@HOST:PORT/DATABASE}"
CONFIG=${CONFIG:-configs/lenet5.yaml}          # the run config every trial starts from
SWEEP=${SWEEP:-configs/sweeps/lenet5.yaml}     # the search space, objective, trials
WORKERS=${WORKERS:-gpu}                        # workers here: `gpu` is one per GPU, or a number
ACCELERATOR=${ACCELERATOR:-gpu}                # gpu; cpu to try it without GPUs
DIGITLAB=${DIGITLAB:-digitlab}                 # the command, e.g. a virtual environment's bin/digitlab

# This machine's GPUs: those a scheduler gave this job (CUDA_VISIBLE_DEVICES, as SLURM sets it), else all of them.
gpus=()
if [[ -n ${CUDA_VISIBLE_DEVICES:-} ]]; then
    IFS=, read -r -a gpus <<< "$CUDA_VISIBLE_DEVICES"
elif [[ $WORKERS == gpu ]]; then
    mapfile -t gpus < <(nvidia-smi --query-gpu=index --format=csv,noheader)
fi
if [[ $WORKERS == gpu ]]; then
    WORKERS=${#gpus[@]}
fi
# Workers share this machine's cores: each gets its share of threads (PyTorch's default is one per core each).
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(( $(nproc) / WORKERS > 0 ? $(nproc) / WORKERS : 1 ))}

pids=()
for ((worker = 0; worker < WORKERS; worker++)); do
    CUDA_VISIBLE_DEVICES=${gpus[$worker]:-$worker} \
        "$DIGITLAB" sweep --config "$CONFIG" --sweep "$SWEEP" --storage "$STORAGE" \
        --trainer.accelerator "$ACCELERATOR" --trainer.devices 1 "$@" &
    pids+=($!)
done

stop() {
    local pid  # the waiting loop below has its own `pid`: a trap runs in the middle of it
    for pid in "${pids[@]}"; do
        kill -s "$1" "$pid" 2>/dev/null || true
    done
}
trap 'stop TERM' TERM
trap 'stop INT' INT

status=0
for pid in "${pids[@]}"; do
    # `wait` also returns early when a trapped signal arrives: wait until the worker has ended, then once more for
    # its own exit status, which bash keeps.
    while kill -0 "$pid" 2>/dev/null; do
        wait "$pid" || true
    done
    code=0
    wait "$pid" || code=$?
    if [[ $status -eq 0 && $code -ne 0 ]]; then
        status=$code
    fi
done
exit $status
