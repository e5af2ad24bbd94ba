"""Several processes training one model (DistributedDataParallel, gloo on the CPU): sharding, one writer, equal
weights on every rank, resume, and ``torchrun -m prunekit train|finetune`` from the shell."""
import json
import os
import socket
import subprocess
import sys

import pytest
import torch

from prunekit.models.checkpoints import load_checkpoint, read_checkpoint
from prunekit.data import ArraySet, DeviceLoader
from prunekit.distributed import World, distributed, is_main, world
from prunekit.runs.records import read_manifest
from prunekit.criteria.scores import weights_hash
from tests.conftest import REPO, tiny_arrays

pytestmark = pytest.mark.ddp
TRAIN_FILES = {"epoch001.safetensors", "model.safetensors", "state.pt", "metrics.jsonl", "start.json"}


def test_a_single_process_is_rank_0_of_1(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with distributed("cpu") as w:
        assert w == World(device=torch.device("cpu")) and w.is_main and not w.enabled
    assert is_main() and world().world_size == 1


def test_sharded_loaders_split_every_epoch_between_the_ranks():
    n = 64
    data = ArraySet("ids", torch.zeros(n, 3, 32, 32, dtype=torch.uint8), torch.arange(n), [str(i) for i in range(n)],
                    (0.5,) * 3, (0.25,) * 3)  # the label is the image's index
    loaders = [DeviceLoader(data, 8, train=True, seed=3).shard(2, rank) for rank in range(2)]
    assert [len(lo) for lo in loaders] == [4, 4]  # 32 images, 4 batches of 8 per rank
    epochs = []
    for epoch in range(2):
        seen = []
        for lo in loaders:
            lo.set_epoch(epoch)
            seen.append(torch.cat([y for _, y in lo]).tolist())
        assert not set(seen[0]) & set(seen[1]) and sorted(seen[0] + seen[1]) == list(range(n))
        epochs.append(seen[0])
    assert epochs[0] != epochs[1]  # reshuffled by set_epoch
    with pytest.raises(ValueError, match="training"):
        DeviceLoader(data, 8, train=False).shard(2, 0)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Stop(Exception):
    pass


def _resume_worker(rank: int, world_size: int, port: int, out: str) -> None:
    """One rank: an uninterrupted 2-epoch run into out/a, one "killed" after epoch 1 into out/b, then resumed."""
    import torch.distributed as dist

    from prunekit.models.zoo import build_model
    from prunekit.training.train import TrainConfig, fit

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        data = tiny_arrays(64, classes=2)
        data.images[data.labels == 1] //= 4
        config = TrainConfig(epochs=2, batch_size=8, lr=0.05, warmup_epochs=0, seed=1)
        loaders = lambda: (DeviceLoader(data, 8, train=True, seed=1), DeviceLoader(data, 32, train=False))
        torch.manual_seed(rank)  # different initial weights on each rank: DDP must start them all from rank 0's
        straight = build_model("resnet20", num_classes=2)
        finals = []
        fit(straight, *loaders(), config, f"{out}/a", arch="resnet20", num_classes=2, progress=False,
            on_finish=finals.append)

        def stop_after_1(row):
            if row["epoch"] == 1:
                raise _Stop

        torch.manual_seed(rank)  # the same initial weights as the uninterrupted run's
        try:
            fit(build_model("resnet20", num_classes=2), *loaders(), config, f"{out}/b", arch="resnet20",
                num_classes=2, progress=False, on_epoch=stop_after_1)
        except _Stop:
            pass
        resumed = build_model("resnet20", num_classes=2)  # fresh weights: all must come from the state
        rows = fit(resumed, *loaders(), config, f"{out}/b", arch="resnet20", num_classes=2, progress=False)
        result = {"straight": weights_hash(straight), "resumed": weights_hash(resumed),
                  "epochs": [r["epoch"] for r in rows], "ddp": finals[0]["ddp"]}
        with open(f"{out}/rank{rank}.json", "w") as fh:  # the test's own report, not the trainer's
            json.dump(result, fh)
    finally:
        dist.destroy_process_group()


def test_two_ranks_train_one_model_write_once_and_resume_exactly(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_resume_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert ranks[0]["straight"] == ranks[1]["straight"]  # one model on both ranks
    assert ranks[0]["ddp"]["weights_hash_per_rank"] == [ranks[0]["straight"]] * 2
    assert ranks[0]["ddp"]["world_size"] == 2 and ranks[0]["ddp"]["backend"] == "gloo"
    for r in ranks:
        assert r["resumed"] == r["straight"] and r["epochs"] == [1, 2]  # resumed = uninterrupted, every rank
    for run in ("a", "b"):
        assert {p.name for p in (tmp_path / run).iterdir()} == TRAIN_FILES  # no temporary files left behind
        metrics = [json.loads(x) for x in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
        assert [m["epoch"] for m in metrics] == [1, 2]
    state = torch.load(tmp_path / "b" / "state.pt", weights_only=True)
    assert len(state["rng_per_rank"]) == 2
    _, header = read_checkpoint(tmp_path / "a" / "model.safetensors")
    assert header["meta"]["ddp"]["consistent"] is True


def _diverging_worker(rank: int, world_size: int, port: int, out: str) -> None:
    """One rank of two; rank 1 alone gets infinite classifier weights after step 2, so its loss alone is NaN at
    step 3: both ranks must stop there together (a rank stopping alone would leave the other waiting in its next
    collective; the 60 s timeout turns such a hang into an error)."""
    import datetime
    import math

    import torch.distributed as dist

    from prunekit.models.zoo import build_model
    from prunekit.training.train import TrainConfig, TrainingDivergedError, fit

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world_size, timeout=datetime.timedelta(seconds=60))
    try:
        model = build_model("resnet20", num_classes=2)

        def corrupt_rank_1(info):
            if rank == 1 and (info["epoch"], info["batch"]) == (1, 2):
                with torch.no_grad():
                    model.fc.weight.fill_(math.inf)

        try:
            fit(model, DeviceLoader(tiny_arrays(64, classes=2), 8, train=True, seed=1),
                DeviceLoader(tiny_arrays(32, classes=2), 32, train=False), TrainConfig(epochs=2, batch_size=8, lr=0.05),
                f"{out}/train", arch="resnet20", num_classes=2, progress=False, on_batch=corrupt_rank_1)
            message = None
        except TrainingDivergedError as exc:
            message = str(exc)
        with open(f"{out}/rank{rank}.json", "w") as fh:
            json.dump({"message": message}, fh)
    finally:
        dist.destroy_process_group()


def test_a_loss_gone_nan_on_one_rank_stops_every_rank_at_the_same_step(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_diverging_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    messages = [json.loads((tmp_path / f"rank{r}.json").read_text())["message"] for r in range(2)]
    assert all(m and "training diverged in epoch 1 at step 3 of 4" in m for m in messages), messages
    assert "the loss is nan" in messages[1] and "the loss is not finite on another rank" in messages[0]
    assert not (tmp_path / "train" / "state.pt").exists() and not (tmp_path / "train" / "model.safetensors").exists()


def _torchrun(*args: str, timeout: int = 300, nproc: int = 2) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", "-m",
           "prunekit", *args, "--device", "cpu", "--threads", "1"]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout, env=env)


def _json_lines(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


@pytest.mark.data
def test_torchrun_train_from_the_shell(cifar_data_root, tmp_path):
    out = _torchrun("train", "--model", "resnet20", "--data-root", str(cifar_data_root), "--subset", "256",
                    "--test-subset", "128", "--epochs", "2", "--batch-size", "32", "--out", str(tmp_path / "run"))
    assert out.returncode == 0, out.stderr[-3000:]
    (result,) = _json_lines(out.stdout)  # printed once, by rank 0
    assert out.stdout.count("training resnet20") == 1 and "x 2 processes (gloo)" in out.stdout
    assert {p.name for p in (tmp_path / "run").iterdir()} == TRAIN_FILES
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]  # one row per epoch, written by one rank
    model, header = load_checkpoint(tmp_path / "run" / "model.safetensors")
    ddp = header["meta"]["ddp"]
    assert ddp["world_size"] == 2 and ddp["backend"] == "gloo" and ddp["consistent"] is True
    assert ddp["weights_hash_per_rank"] == [weights_hash(model)] * 2  # both ranks hold the saved weights
    assert header["meta"]["test_accuracy"] == pytest.approx(result["test_accuracy"])


@pytest.mark.data
def test_torchrun_with_one_process_joins_a_group_of_one(cifar_data_root, tmp_path):
    """`--nproc_per_node=1` trains through DistributedDataParallel too (on a GPU: NCCL, tests/test_cuda.py)."""
    out = _torchrun("train", "--model", "resnet20", "--data-root", str(cifar_data_root), "--subset", "128",
                    "--test-subset", "64", "--epochs", "1", "--batch-size", "32", "--out", str(tmp_path / "run"),
                    nproc=1)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "x 1 processes (gloo)" in out.stdout
    model, header = load_checkpoint(tmp_path / "run" / "model.safetensors")
    ddp = header["meta"]["ddp"]
    assert ddp["world_size"] == 1 and ddp["backend"] == "gloo" and ddp["weights_hash_per_rank"] == [weights_hash(model)]


@pytest.mark.data
def test_torchrun_finetune_from_the_shell(cifar_data_root, tmp_path):
    from prunekit.data import load_arrays
    from tests.test_finetune import _pruned_run

    source = tmp_path / "unpruned.safetensors"  # every rank distils from the run's unpruned model
    run = _pruned_run(tmp_path, 10, load_arrays("cifar10", "test", cifar_data_root).subset(64), checkpoint=source)
    out = _torchrun("finetune", "--run-dir", str(run.path), "--data-root", str(cifar_data_root), "--subset", "256",
                    "--test-subset", "128", "--epochs", "2", "--batch-size", "32", "--distill-alpha", "0.5")
    assert out.returncode == 0, out.stderr[-3000:]
    (result,) = _json_lines(out.stdout)
    m = read_manifest(run.path)
    ft = m["finetune"]
    assert result["status"] == m["status"] == "done" and result["epochs"] == 2
    assert [r["epoch"] for r in ft["epochs"]] == [1, 2] and ft["data"] == {"name": "cifar10", "train": 256,
                                                                           "test": 128}
    assert ft["ddp"]["world_size"] == 2 and ft["ddp"]["backend"] == "gloo"
    assert ft["teacher"]["path"] == str(source) and ft["teacher"]["unpruned"] and result["teacher"] == ft["teacher"]
    hashes = ft["ddp"]["weights_hash_per_rank"]
    tuned, header = load_checkpoint(run.path / ft["model"])
    assert hashes == [weights_hash(tuned)] * 2 and header["meta"]["ddp"]["weights_hash_per_rank"] == hashes
    assert {p.name for p in (run.path / "finetune").iterdir()} == TRAIN_FILES
    rows = [json.loads(x) for x in (run.path / "finetune" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
