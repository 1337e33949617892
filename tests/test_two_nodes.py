"""Multi-node DDP proven on one machine, processes standing in for two nodes, through the templates users copy
(examples/cluster/): two `torchrun.sh` launches as on two machines (TorchElastic's variables), and `sbatch.sh` run
as SLURM runs it, its `srun` the fake of tests/cluster/bin (SLURM's variables). Lightning's own environments do the
rest. Each node reads its own copy of the data (node-local disks); the logs folder is shared, as on a cluster.

What the ranks did is recorded by a test-only callback (tests/cluster/rank_records.py) appended to the trainer's
callbacks on the command line: the launch is otherwise exactly a user's.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from cluster_jobs import run_job, start_torchrun_node, stop_job
from conftest import REPO, digitlab_here, write_mnist_like
from ports import free_port
from tensorboard_events import scalars

pytestmark = pytest.mark.slow  # each launch starts 2 to 4 DDP ranks, each a process of its own

TEMPLATES = REPO / "examples" / "cluster"
RECORDER = Path(__file__).resolve().with_name("cluster")  # rank_records.py: on the launched processes' PYTHONPATH
TRAIN, TEST = 199, 53  # multiples of neither 2 nor 4: samplers would have to pad
QUIET = ["--data.verify", "false", "--data.download", "false", "--trainer.enable_progress_bar", "false",
         "--trainer.enable_model_summary", "false"]
CENTROID = [*QUIET, "--data.batch_size", "32", "--data.eval_batch_size", "16"]  # several batches, some padded
LENET5 = [*QUIET, "--data.val_split", "41", "--data.batch_size", "32", "--trainer.max_steps", "3"]
DATA_FILES = {"train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
              "t10k-labels-idx1-ubyte.gz"}


@dataclass
class Launch:
    """A finished multi-node launch: its output, the shared working folder, each node's data folder, and what the
    ranks recorded."""

    output: str
    cwd: Path
    data: list[Path]
    records: Path

    def lines(self, name: str) -> list[dict]:
        return [json.loads(line) for line in (self.records / name).read_text().splitlines()]

    def weights(self) -> dict[int, dict[str, torch.Tensor]]:
        return {int(p.stem.removeprefix("weights-rank")): torch.load(p, weights_only=True)
                for p in self.records.glob("weights-rank*.pt")}

    def run_folders(self) -> list[Path]:
        return list((self.cwd / "lightning_logs").iterdir())


def recorder(records: Path) -> list[str]:
    """The command-line options that append the recording callback to the config's callbacks."""
    spec = {"class_path": "rank_records.RecordRanks", "init_args": {"out": str(records)}}
    return [f"--trainer.callbacks+={json.dumps(spec)}"]


def with_recorder_path(env: dict[str, str]) -> dict[str, str]:
    return {**env, "PYTHONPATH": os.pathsep.join(filter(None, [str(RECORDER), os.environ.get("PYTHONPATH")]))}


def prepare(base: Path, nodes: int = 2) -> tuple[Path, Path, list[Path]]:
    """A shared working folder, a records folder, and each node's own copy of the data."""
    cwd, records = base / "shared", base / "records"
    cwd.mkdir()
    records.mkdir()
    data = [base / f"node{k}-disk" for k in range(nodes)]
    write_mnist_like(data[0], train=TRAIN, test=TEST)
    for folder in data[1:]:
        shutil.copytree(data[0], folder)
    return cwd, records, data


def torchrun_launch(base: Path, config: str, nproc: int, *args: str) -> Launch:
    """torchrun.sh started twice, as on two machines, node k reading its data from its own disk."""
    cwd, records, data = prepare(base)
    port = free_port()
    nodes = []
    for rank in range(2):
        env = with_recorder_path({"NNODES": "2", "NPROC_PER_NODE": str(nproc), "MAX_RESTARTS": "0",
                                  "CONFIG": str(REPO / config), "ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1",
                                  "DIGITLAB_DATA_DIR": str(data[rank])})
        nodes.append(start_torchrun_node(TEMPLATES / "torchrun.sh", *args, *recorder(records), cwd=cwd,
                                         node_rank=rank, port=port, output=base / f"node{rank}.out", env=env))
    try:
        codes = [node.wait(timeout=600) for node in nodes]
    finally:
        for node in nodes:
            stop_job(node)
    outputs = [(base / f"node{rank}.out").read_text() for rank in range(2)]
    assert codes == [0, 0], "\n".join(out[-4000:] for out in outputs)
    return Launch(outputs[0], cwd, data, records)


def slurm_launch(base: Path, config: str, tasks_per_node: int, job_id: int, *args: str) -> Launch:
    """sbatch.sh run as the batch step of a 2-node job, its srun starting every task here."""
    cwd, records, data = prepare(base)
    env = with_recorder_path({"CONFIG": str(REPO / config), "ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1",
                              "MASTER_PORT": str(free_port()),  # else Lightning's port from the job id
                              **{f"FAKE_SRUN_NODE{k}_DIGITLAB_DATA_DIR": str(folder) for k, folder in enumerate(data)}})
    result = run_job(TEMPLATES / "sbatch.sh", *args, *recorder(records), cwd=cwd, job_id=job_id, nodes=2,
                     tasks_per_node=tasks_per_node, env=env, output=base / "slurm.out")
    assert result.returncode == 0, result.stdout[-6000:]
    return Launch(result.stdout, cwd, data, records)


@pytest.fixture(scope="module")
def torchrun_centroid(tmp_path_factory) -> Launch:
    """2 nodes x 1 process, torchrun."""
    return torchrun_launch(tmp_path_factory.mktemp("torchrun-centroid"), "configs/centroid.yaml", 1, *CENTROID)


@pytest.fixture(scope="module")
def slurm_centroid(tmp_path_factory) -> Launch:
    """2 nodes x 1 task, SLURM."""
    return slurm_launch(tmp_path_factory.mktemp("slurm-centroid"), "configs/centroid.yaml", 1, 6101, *CENTROID)


@pytest.fixture(scope="module")
def slurm_lenet5(tmp_path_factory) -> Launch:
    """2 nodes x 2 tasks (4 ranks), SLURM: a few steps of lenet5_fast."""
    return slurm_launch(tmp_path_factory.mktemp("slurm-lenet5"), "configs/lenet5_fast.yaml", 2, 6102, *LENET5)


@pytest.fixture(scope="module")
def single_centroid(tmp_path_factory) -> Path:
    """The centroid fit in one process (this one), on the same files: its run folder."""
    base = tmp_path_factory.mktemp("single")
    data = write_mnist_like(base / "data", train=TRAIN, test=TEST)
    result = digitlab_here("fit", "--config", str(REPO / "configs" / "centroid.yaml"), *CENTROID,
                           "--data.data_dir", str(data), "--trainer.accelerator", "cpu", "--trainer.devices", "1",
                           cwd=base)
    assert result.returncode == 0, result.stderr[-3000:]
    return base / "lightning_logs" / "version_0"


LAUNCHES = ["torchrun_centroid", "slurm_centroid", "slurm_lenet5"]
RUN_FOLDERS = {"torchrun_centroid": "version_0", "slurm_centroid": "version_6101", "slurm_lenet5": "version_6102"}


@pytest.mark.parametrize("launch", ["torchrun_centroid", "slurm_centroid"])
def test_centroid_on_two_nodes_is_the_one_process_centroid_and_counts_every_image_once(request, launch,
                                                                                      single_centroid):
    launched: Launch = request.getfixturevalue(launch)
    single = torch.load(single_centroid / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    ranks = launched.weights()
    assert sorted(ranks) == [0, 1]
    for weights in ranks.values():
        assert torch.equal(weights["means"], single["means"])  # exactly, not approximately
        assert int(weights["counts"].sum()) == TRAIN
    run = launched.cwd / "lightning_logs" / RUN_FOLDERS[launch]
    assert scalars(run)["test/images"] == [TEST]
    assert scalars(run)["test/acc"] == scalars(single_centroid)["test/acc"]
    assert launched.output.count("Test accuracy:") == 1  # printed by global rank 0 only
    assert f" on {TEST} images" in launched.output.split("Test accuracy:")[1].splitlines()[0]


def test_lenet5_weights_are_identical_on_all_four_ranks_of_two_nodes(slurm_lenet5):
    ranks = slurm_lenet5.weights()
    assert sorted(ranks) == [0, 1, 2, 3]
    saved = torch.load(slurm_lenet5.run_folders()[0] / "checkpoints" / "last.ckpt", weights_only=True)
    assert saved["global_step"] == 3
    for name, weight in ranks[0].items():
        for rank in (1, 2, 3):
            assert torch.equal(weight, ranks[rank][name]), f"{name} differs on rank {rank}"
        assert torch.equal(weight, saved["state_dict"][name]), name  # what rank 0 saved is what every rank has


@pytest.mark.parametrize("launch", LAUNCHES)
def test_one_run_folder_written_by_global_rank_0_only(request, launch):
    launched: Launch = request.getfixturevalue(launch)
    assert [p.name for p in launched.cwd.iterdir()] == ["lightning_logs"]  # no stray checkpoints/ or config
    assert [p.name for p in launched.run_folders()] == [RUN_FOLDERS[launch]]
    run = launched.run_folders()[0]
    assert (run / "config.yaml").is_file() and (run / "checkpoints" / "last.ckpt").is_file()
    pids = {line["global_rank"]: line["pid"] for line in launched.lines("ranks.jsonl")}
    events = list(run.glob("events.out.tfevents.*"))
    assert events and {int(p.name.split(".")[-2]) for p in events} == {pids[0]}  # the writer's process id
    for folder in launched.data:
        assert {p.name for p in folder.iterdir()} == DATA_FILES  # nothing written beside a node's data


@pytest.mark.parametrize("launch", LAUNCHES)
def test_prepare_data_runs_once_per_node_and_stage_on_each_nodes_own_data(request, launch):
    """Lightning calls prepare_data on local rank 0 of every node (prepare_data_per_node), once for `fit` and
    once for the test after it: never twice in one stage on one node, and each node on its own disk."""
    launched: Launch = request.getfixturevalue(launch)
    calls = launched.lines("prepare_data.jsonl")
    assert sorted((c["stage"], c["node"]) for c in calls) == [("fit", 0), ("fit", 1), ("test", 0), ("test", 1)]
    for call in calls:
        assert call["local_rank"] == 0
        assert call["data_dir"] == str(launched.data[call["node"]])
