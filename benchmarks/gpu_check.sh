#!/usr/bin/env bash
# The GPU check: what digitlab does on CUDA GPUs, in one run sized for 8 minutes on one GPU, ending in one table.
#
#   1. the test suite's GPU tests (`pytest -m gpu`: data on the device, bf16-mixed, torch.compile, DDP over
#      every GPU with exact image counts when there are 2 or more);
#   2. time to val/acc 0.99 and 0.995 with the data on the GPU, LeNet-5 and the batch-norm CNN
#      (benchmarks/time_to_accuracy.py), and the race for 99 % test accuracy in under 0.76 s of training
#      (benchmarks/race_to_99.py; the public record: tuomaso/train_mnist_fast on a GTX 1660 Ti);
#   3. the DDP overlay (configs/trainer/ddp.yaml) on every visible GPU: the centroid's exact 0.8203 and LeNet-5,
#      each counting the 10,000 test images exactly once;
#   4. two nodes on this machine (examples/cluster/torchrun.sh launched twice, half of the GPUs each): the centroid's
#      exact 0.8203 again;
#   5. an elastic restart and a SLURM requeue on 2 GPUs (benchmarks/restarts.py), against the uninterrupted run.
#
# Without CUDA it runs what a CPU can (the GPU tests' collection, the DDP check on 2 CPU processes with
# configs/trainer/cpu_ddp.yaml, two nodes of 1 CPU process each) and says what it skipped.
#
#   benchmarks/gpu_check.sh                     # from anywhere; PYTHON and DIGITLAB_DATA_DIR may be set
set -uo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
PYTHON=${PYTHON:-python}
export DIGITLAB_DATA_DIR=${DIGITLAB_DATA_DIR:-$(cd .. && pwd)/shared/data/mnist}
export DIGITLAB_DISABLE_PLUGINS=1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
rows=()
failed=0

row() {  # check, result, seconds, status
    rows+=("$(printf '%-52s | %-44s | %7s | %s' "$1" "$2" "$3" "$4")")
    [ "$4" = FAILED ] && failed=1
    return 0
}

digitlab() {  # a digitlab command in an empty folder of its own (config paths absolute); output in $work/out
    rm -rf "$work/run" && mkdir "$work/run"
    (cd "$work/run" && "$PYTHON" -m digitlab.cli "$@") >"$work/out" 2>&1
}

gpus=$("$PYTHON" -c "import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)")
name=$("$PYTHON" -c "import torch; print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no CUDA GPU')")
echo "GPU check: $gpus GPU(s) ($name); $("$PYTHON" -c "import torch; print('torch', torch.__version__)")"

# 1. The GPU tests.
start=$SECONDS
"$PYTHON" -m pytest -m gpu -n 0 -q -rs -p no:cacheprovider tests >"$work/pytest" 2>&1
code=$?
summary=$(tail -n 1 "$work/pytest" | sed 's/=//g; s/^ *//; s/ *$//')
tail -n 15 "$work/pytest"
if [ $code -ne 0 ]; then
    row "GPU tests (pytest -m gpu)" "$summary" $((SECONDS - start)) FAILED
elif [ "$gpus" = 0 ]; then
    row "GPU tests (pytest -m gpu)" "$summary" $((SECONDS - start)) "skipped: no CUDA"
else
    row "GPU tests (pytest -m gpu)" "$summary" $((SECONDS - start)) ok
fi

# 2. Time to val/acc 0.99 and 0.995 with the data on the GPU: LeNet-5's long fast recipe and the batch-norm CNN
#    (configs/bncnn.yaml), each a whole `digitlab fit` (benchmarks/time_to_accuracy.py, one run each).
if [ "$gpus" = 0 ]; then
    row "time to val/acc 0.99 / 0.995 (data on the GPU)" "-" - "skipped: no CUDA"
else
    start=$SECONDS
    "$PYTHON" benchmarks/time_to_accuracy.py --recipes lenet5_gpu bncnn_gpu --repeats 1 >"$work/tta" 2>&1
    code=$?
    grep -v "^\s*$" "$work/tta" | tail -n 6
    for recipe in lenet5_gpu bncnn_gpu; do
        line=$(grep "^$recipe " "$work/tta")
        whole=$(echo "$line" | awk '{print $2}')
        to99=$(echo "$line" | awk '{print $3}')
        to995=$(echo "$line" | awk '{print $5}')
        if [ $code -ne 0 ] || [ -z "$line" ]; then
            row "time to val/acc: $recipe" "${line:-no result}" $((SECONDS - start)) FAILED
        else
            row "time to val/acc: $recipe" "0.99: $to99 s, 0.995: $to995 s; fit $whole s" $((SECONDS - start)) ok
        fi
    done
fi

# 2b. The race for 99 % test accuracy in < 0.76 s of training (plain PyTorch, data on the GPU, batch 256, Adam
#     with one-cycle; benchmarks/race_to_99.py); it prints its own reason and skips without CUDA.
start=$SECONDS
"$PYTHON" benchmarks/race_to_99.py >"$work/race" 2>&1
code=$?
tail -n 3 "$work/race"
if [ "$gpus" = 0 ]; then
    row "race: 99 % test accuracy in < 0.76 s" "-" - "skipped: no CUDA"
elif grep -q "^RACE" "$work/race"; then
    result=$(grep "^RACE" "$work/race" | sed 's/.*: mean test accuracy \([0-9.]*\) over.* in \([0-9.]*\) s of.*/\1 in \2 s/')
    row "race: 99 % test accuracy in < 0.76 s" "$result" $((SECONDS - start)) \
        "$([ $code -eq 0 ] && echo ok || echo 'ok (record not beaten)')"
else
    row "race: 99 % test accuracy in < 0.76 s" "failed" $((SECONDS - start)) FAILED
fi

# 3. The DDP overlay on every GPU (2 CPU processes without CUDA): every test image counted exactly once.
if [ "$gpus" = 0 ]; then
    overlay=$repo/configs/trainer/cpu_ddp.yaml
    where="2 CPU processes"
else
    overlay=$repo/configs/trainer/ddp.yaml
    where="$gpus GPU(s)"
fi
start=$SECONDS
digitlab fit --config "$repo/configs/centroid.yaml" --config "$overlay" --trainer.enable_progress_bar false
if [ $? -eq 0 ] && grep -q "Test accuracy: 0.8203 on 10000 images" "$work/out"; then
    row "DDP overlay, centroid ($where)" "0.8203 on 10000 images, as on one process" $((SECONDS - start)) ok
else
    tail -n 20 "$work/out"
    row "DDP overlay, centroid ($where)" "$(grep -o 'Test accuracy.*' "$work/out" || echo 'failed')" \
        $((SECONDS - start)) FAILED
fi
if [ "$gpus" = 0 ]; then
    row "DDP overlay, LeNet-5 (GPUs)" "-" - "skipped: no CUDA"
else
    start=$SECONDS
    digitlab fit --config "$repo/configs/lenet5_fast.yaml" --config "$overlay" --trainer.max_epochs 1 \
        --trainer.enable_progress_bar false
    result=$(grep -o "Test accuracy: .*" "$work/out")
    if [ -n "$result" ] && echo "$result" | grep -q "on 10000 images"; then
        row "DDP overlay, LeNet-5 fast, 1 epoch ($where)" "$result" $((SECONDS - start)) ok
    else
        tail -n 20 "$work/out"
        row "DDP overlay, LeNet-5 fast, 1 epoch ($where)" "${result:-failed}" $((SECONDS - start)) FAILED
    fi
fi

# 4. Two nodes on this machine: examples/cluster/torchrun.sh launched twice, as on two machines, each "node" with
#    half of the GPUs (NCCL); with fewer than 2 GPUs, 2 nodes x 1 CPU process (gloo). The centroid's exact 0.8203.
if [ "$gpus" -ge 2 ]; then
    per_node=$((gpus / 2)) accelerator=gpu where="2 x $((gpus / 2)) GPU(s)"
    IFS=, read -r -a visible <<< "${CUDA_VISIBLE_DEVICES:-$(seq -s, 0 $((gpus - 1)))}"
else
    per_node=1 accelerator=cpu where="2 x 1 CPU process" visible=()
fi
port=$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
rm -rf "$work/run" && mkdir "$work/run"
start=$SECONDS
nodes=()
for node in 0 1; do
    mine=$(IFS=,; echo "${visible[*]:$((node * per_node)):$per_node}")  # this node's GPUs; none on CPUs
    (cd "$work/run" && CUDA_VISIBLE_DEVICES=$mine NODE_RANK=$node MASTER_ADDR=127.0.0.1 MASTER_PORT=$port NNODES=2 \
        NPROC_PER_NODE=$per_node MAX_RESTARTS=0 ACCELERATOR=$accelerator PYTHON=$PYTHON \
        CONFIG="$repo/configs/centroid.yaml" "$repo/examples/cluster/torchrun.sh" --trainer.enable_progress_bar false) \
        >"$work/node$node" 2>&1 &
    nodes+=($!)
done
wait "${nodes[0]}"; first=$?
wait "${nodes[1]}"; second=$?
if [ $first -eq 0 ] && [ $second -eq 0 ] && grep -q "Test accuracy: 0.8203 on 10000 images" "$work/node0"; then
    row "two nodes, torchrun.sh, centroid ($where)" "0.8203 on 10000 images, as on one process" \
        $((SECONDS - start)) ok
else
    tail -n 20 "$work/node0" "$work/node1"
    row "two nodes, torchrun.sh, centroid ($where)" "$(grep -o 'Test accuracy.*' "$work/node0" || echo 'failed')" \
        $((SECONDS - start)) FAILED
fi

# 5. Restarts with NCCL (2 or more GPUs): an elastic restart after a SIGKILLed rank and a preempted, requeued SLURM
#    job (fake srun and scontrol), each against the uninterrupted run (benchmarks/restarts.py; GPU kernels may not
#    be bit-identical: the largest weight difference is printed).
if [ "$gpus" -ge 2 ]; then
    start=$SECONDS
    if "$PYTHON" "$repo/benchmarks/restarts.py" --accelerator gpu >"$work/restarts" 2>&1 \
            && [ "$(grep -c 'exit code(s): 0$\|exit code(s): 138, 0$' "$work/restarts")" -eq 3 ]; then
        row "restarts: elastic and SLURM requeue (2 GPUs)" \
            "largest weight differences: $(grep -o 'from a: [0-9.e-]*' "$work/restarts" | tail -2 | cut -d' ' -f3 | paste -sd,)" \
            $((SECONDS - start)) ok
    else
        tail -n 30 "$work/restarts"
        row "restarts: elastic and SLURM requeue (2 GPUs)" "failed (output above)" $((SECONDS - start)) FAILED
    fi
else
    row "restarts: elastic and SLURM requeue" "skipped: needs 2 GPUs (CPU: tests/test_restarts.py)" 0 skipped
fi

echo
printf '%-52s | %-44s | %7s | %s\n' "check" "result" "seconds" "status"
printf '%s\n' "${rows[@]}"
exit $failed
