"""Training on an image folder (FolderLoader over folder_dataset): the loader's order, sharding and length, a model
that learns, resume after a kill, and `train --folder` / `finetune --folder` from the command line."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from prunekit.models.checkpoints import load_checkpoint
from prunekit.data import FolderLoader, folder_splits
from prunekit.models.zoo import build_model
from prunekit.training.train import TrainConfig, fit


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """train/ (32 per class) and val/ (8 per class) trees of 40x40 noise PNGs, classes a and b; b is darker."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for split, n in (("train", 32), ("val", 8)):
        for cls, scale in (("a", 1), ("b", 4)):
            (root / split / cls).mkdir(parents=True)
            for i in range(n):
                pixels = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8) // scale
                Image.fromarray(pixels).save(root / split / cls / f"{i:02d}.png")
    return root


def _loaders(folder, workers=0, seed=0):
    train, val = folder_splits(folder, image_size=32)
    return (FolderLoader(train, 16, train=True, seed=seed, num_workers=workers),
            FolderLoader(val, 16, train=False, num_workers=workers))


def test_folder_loader_shuffles_by_its_generator_shards_and_counts_batches(folder):
    train, val = _loaders(folder)
    assert len(train) == 4 and len(val) == 1
    x, y = next(iter(train))
    assert x.shape == (16, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert torch.equal(torch.cat([y for _, y in val]), torch.tensor([0] * 8 + [1] * 8))  # in order, all of them

    def order(loader):
        return torch.cat([y for _, y in loader])

    state = train.generator.get_state()
    first, second = order(train), order(train)
    assert len(first) == 64 and not torch.equal(first, second)  # reshuffled each epoch
    train.generator.set_state(state)  # what resume does
    assert torch.equal(order(train), first)
    assert not torch.equal(order(_loaders(folder, seed=1)[0]), first)

    shards = [_loaders(folder, seed=3)[0].shard(2, rank) for rank in range(2)]
    assert [len(s) for s in shards] == [2, 2]
    picked = [list(s.sampler) for s in shards]
    assert not set(picked[0]) & set(picked[1]) and len(picked[0]) == 32
    shards[0].set_epoch(1)
    assert list(shards[0].sampler) != picked[0]
    with pytest.raises(ValueError, match="training"):
        val.shard(2, 0)


def test_a_model_learns_from_an_image_folder_with_workers(folder, tmp_path):
    torch.manual_seed(0)
    model = build_model("resnet20", num_classes=2)
    rows = fit(model, *_loaders(folder, workers=1), TrainConfig(epochs=4, lr=0.05, warmup_epochs=0), tmp_path,
               arch="resnet20", num_classes=2, progress=False)
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]
    assert 0 <= rows[-1]["test_accuracy"] <= 100
    assert (tmp_path / "model.safetensors").is_file()


class _Stop(Exception):
    pass


def _stop_after(row, epoch):
    if row["epoch"] == epoch:
        raise _Stop


@pytest.mark.parametrize("workers", [0, 1])
def test_resume_on_an_image_folder_gives_the_weights_of_an_uninterrupted_run(folder, tmp_path, workers):
    # workers=0: the crops and flips draw from torch's global RNG, which fit saves and restores;
    # workers=1: the worker is seeded from the loader's generator each epoch, which fit saves and restores
    config = TrainConfig(epochs=3, lr=0.05, warmup_epochs=0, seed=1)
    torch.manual_seed(0)
    straight = build_model("resnet20", num_classes=2)
    fit(straight, *_loaders(folder, workers), config, tmp_path / "a", arch="resnet20", num_classes=2, progress=False)

    torch.manual_seed(0)
    with pytest.raises(_Stop):  # "killed" right after epoch 2 was saved
        fit(build_model("resnet20", num_classes=2), *_loaders(folder, workers), config, tmp_path / "b",
            arch="resnet20", num_classes=2, progress=False, on_epoch=lambda row: _stop_after(row, 2))
    resumed = build_model("resnet20", num_classes=2)  # fresh weights: everything must come from the state
    rows = fit(resumed, *_loaders(folder, workers), config, tmp_path / "b", arch="resnet20", num_classes=2,
               progress=False)
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6), name


def test_train_and_finetune_on_a_folder_from_the_command_line(folder, tmp_path, capsys):
    from prunekit.cli import main
    from prunekit.runs.records import read_manifest
    from tests.test_finetune import _pruned_run

    common = ["--folder", str(folder), "--image-size", "32", "--epochs", "1", "--batch-size", "16", "--workers", "1",
              "--device", "cpu"]
    assert main(["train", "--model", "resnet20", "--out", str(tmp_path / "train"), *common]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    model, header = load_checkpoint(tmp_path / "train" / "model.safetensors")
    assert header["num_classes"] == 2 and header["meta"]["data"] == str(folder.resolve())
    assert header["meta"]["image_size"] == 32 and header["meta"]["test_accuracy"] == result["test_accuracy"]
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 2)

    run = _pruned_run(tmp_path / "runs", classes=2, checkpoint=tmp_path / "unpruned.safetensors")
    assert main(["finetune", "--run", str(run.path), *common]) == 0
    entry = read_manifest(run.path)["finetune"]
    assert entry["data"] == {"name": str(folder.resolve()), "train": 64, "test": 16}
    assert entry["teacher"]["unpruned"] is True  # distilled from the unpruned model (the default recipe)
    assert (run.path / entry["model"]).is_file()
    (tmp_path / "empty").mkdir()
    assert main(["train", "--model", "resnet20", "--out", str(tmp_path / "x"), "--folder", str(tmp_path / "empty")
                 ]) == 2
    assert "train does not exist" in capsys.readouterr().err  # a clear error, not a traceback


def test_a_background_train_job_reads_an_image_folder(folder, tmp_path, monkeypatch):
    from prunekit.runs import jobs
    from prunekit.models.checkpoints import load_checkpoint

    monkeypatch.setenv("PRUNEKIT_JOBS_NO_WORKER", "1")
    root = tmp_path / "jobs"
    with pytest.raises(ValueError, match="needs data .* or folder"):
        jobs.submit("train", {"model": "resnet20", "epochs": 1}, root=root)
    job = jobs.submit("train", {"model": "resnet20", "folder": str(folder), "image_size": 32, "epochs": 2,
                                "batch_size": 16, "lr": 0.05}, device="cpu", root=root)
    jobs.work("cpu", root, idle_exit=0.1)  # the worker loop, in this process
    done = jobs.get(job.id, root)
    assert done.status == "done", done.error
    assert [r["epoch"] for r in done.metrics()] == [1, 2]
    model, header = load_checkpoint(done.result["checkpoint"])
    assert header["num_classes"] == 2 and header["meta"]["data"] == str(folder.resolve())


def _copy_tree(folder, dest):
    import shutil

    shutil.copytree(folder, dest)
    return dest


def test_an_image_that_is_not_one_is_named_before_training_starts(folder, tmp_path, capsys):
    from prunekit.cli import main
    from prunekit.errors import UserError

    root = _copy_tree(folder, tmp_path / "images")
    (root / "train" / "b" / "99.jpg").write_bytes(np.random.default_rng(1).bytes(500))  # not an image
    (root / "val" / "a" / "98.png").write_bytes(b"")  # empty
    with pytest.raises(UserError) as err:
        folder_splits(root, image_size=32)
    message = str(err.value)
    assert "train/b/99.jpg" in message and "1 of 65 images" in message and "remove or replace" in message
    assert "object at 0x" not in message
    out = tmp_path / "out"
    assert main(["train", "--model", "resnet20", "--folder", str(root), "--image-size", "32", "--epochs", "1",
                 "--batch-size", "16", "--workers", "0", "--device", "cpu", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "train/b/99.jpg" in err and "Traceback" not in err and not out.exists()
    (root / "train" / "b" / "99.jpg").unlink()
    with pytest.raises(UserError, match=r"val/a/98.png"):
        folder_splits(root, image_size=32)


@pytest.mark.parametrize("workers", [0, 1])
def test_an_image_damaged_past_its_header_is_named_when_read(folder, tmp_path, workers):
    """A JPEG cut in half passes the header check; decoding it (in a DataLoader worker or not) names the file, in
    a message without a worker's traceback."""
    from prunekit.data.sets import ImageFileError

    root = _copy_tree(folder, tmp_path / "images")
    whole = root / "train" / "a" / "cut.jpg"
    Image.fromarray(np.random.default_rng(2).integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(whole)
    data = whole.read_bytes()
    whole.write_bytes(data[: len(data) * 3 // 4])
    train, val = folder_splits(root, image_size=32)  # the header is fine
    model = build_model("resnet20", num_classes=2)
    with pytest.raises(ImageFileError) as err:
        fit(model, FolderLoader(train, 16, train=True, num_workers=workers), FolderLoader(val, 16, train=False),
            TrainConfig(epochs=1, lr=0.05, warmup_epochs=0), tmp_path / "out", arch="resnet20", num_classes=2,
            progress=False)
    message = str(err.value)
    assert message.startswith(f"{whole}: cannot be decoded as an image (") and "truncated" in message
    assert "remove it from the folder or replace it" in message and "Traceback" not in message
