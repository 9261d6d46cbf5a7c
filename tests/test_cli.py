"""The CLI as a user meets it: real files, subprocesses, exit codes, kill -9, two writers."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zarr

import fakesegment_nb as fs
from fakesegment_nb.writer import StoreWriter

from support import FAST_LAYERS, FAST_MODEL, noise_images

FS = [sys.executable, "-m", "fakesegment_nb.cli"]


def run(*args, **kw):
    return subprocess.run([*FS, *map(str, args)], capture_output=True, text=True, timeout=300, **kw)


def one_line_error(proc):
    assert proc.returncode == 2, proc.stderr
    lines = [l for l in proc.stderr.splitlines() if l.startswith("fakesegment: error:")]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]


@pytest.fixture(scope="module")
def many_dirs(tmp_path_factory):
    """12 real and 12 synthetic small noise-texture images: 12 batches with ``SLOW``."""
    root = tmp_path_factory.mktemp("many")
    rng = np.random.default_rng(0)
    return tuple(noise_images(root / d, [f"img_{i:03d}.png" for i in range(12)], 48, rng)
                 for d in ("real", "synthetic"))


def test_bad_inputs_exit_2_with_one_line(tmp_path, pair_dirs):
    real, syn = pair_dirs
    (tmp_path / "empty").mkdir()
    store = tmp_path / "s.zarr"
    assert "does not exist" in one_line_error(run("extract", "--real", tmp_path / "nope", "--synthetic", syn,
                                                  "--store", store))
    assert "holds no images" in one_line_error(run("extract", "--real", real, "--synthetic", tmp_path / "empty",
                                                   "--store", store))
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("synthetic,real\ncoffee.png,missing.png\n")
    assert "'missing.png' is not an image" in one_line_error(
        run("extract", "--real", real, "--synthetic", syn, "--store", store, "--pairs", pairs))
    wrong = tmp_path / "w.pth"
    import torch
    import torchvision

    torch.save(torchvision.models.mobilenet_v3_small().state_dict(), wrong)
    assert "missing keys" in one_line_error(run("extract", "--real", real, "--synthetic", syn, "--store", store,
                                                "--model", FAST_MODEL, "--layers", ",".join(FAST_LAYERS), "--weights", wrong))
    assert "ssd300_vgg16_coco-b556d3b4.pth is not cached" in one_line_error(
        run("extract", "--real", real, "--synthetic", syn, "--store", store, "--weights", "coco"))
    assert "close matches: resnet18" in one_line_error(
        run("extract", "--real", real, "--synthetic", syn, "--store", store, "--model", "timm:resnet181"))
    assert "has no layer conv4_3; its layers are p2, p3, p4, p5" in one_line_error(
        run("extract", "--real", real, "--synthetic", syn, "--store", store, "--model", "efficientnet_lite0",
            "--layers", "conv4_3"))
    if not torch.cuda.is_available():
        assert "no CUDA device is available here" in one_line_error(
            run("extract", "--real", real, "--synthetic", syn, "--store", store, "--device", "cuda"))
    assert not store.exists() or not (store / "zarr.json").exists()


def test_an_output_path_the_file_system_refuses_is_one_line(tmp_path, fast_store):
    import shutil

    store = shutil.copytree(fast_store, tmp_path / "s.zarr")
    (tmp_path / "afile").write_text("not a folder")
    p = run("stats", "--store", store, "--out", tmp_path / "afile")
    assert p.returncode == 2 and one_line_error(p) == f"fakesegment: error: File exists: {tmp_path / 'afile'}"
    assert "Not a directory" in one_line_error(run("stats", "--store", store, "--out", tmp_path / "afile" / "sub"))
    assert (tmp_path / "afile").read_text() == "not a folder"
    ok = run("stats", "--store", store, "--out", tmp_path / "stats")
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "stats" / "layers.csv").is_file()


def test_a_trained_lite0_store_is_not_extended_with_ssd(tmp_path, pair_dirs):
    store = tmp_path / "lite0.zarr"
    p = run("extract", "--real", pair_dirs[0], "--synthetic", pair_dirs[1], "--store", store,
            "--model", "efficientnet_lite0", "--quiet")
    assert p.returncode == 0, p.stderr
    assert "weights imagenet:efficientnet-lite0-57934424" in p.stdout and "warning" not in p.stderr
    msg = one_line_error(run("extract", "--real", pair_dirs[0], "--synthetic", pair_dirs[1], "--store", store,
                             "--weights", "random:0"))
    assert "was made with another network: model 'efficientnet_lite0' (this run: 'ssd300_vgg16')" in msg
    tree = fs.open_store(store)
    assert tree.sizes["image"] == 8 and tree.attrs["weights_trained"] is True


def test_cli_extract_prints_summary_and_warns_untrained(tmp_path, pair_dirs):
    p = run("extract", "--real", pair_dirs[0], "--synthetic", pair_dirs[1], "--store", tmp_path / "s.zarr",
            "--model", FAST_MODEL, "--layers", ",".join(FAST_LAYERS), "--quiet")
    assert p.returncode == 0, p.stderr
    assert "8 images added, 0 already stored, 0 skipped" in p.stdout and "weights random:0" in p.stdout
    assert "warning: no pretrained weights" in p.stderr


def _committed(store: Path) -> int:
    try:
        return int(zarr.open_group(str(store), mode="r").attrs["images_committed"])
    except Exception:
        return 0


# The runs that get killed or raced use ssd300 at batch size 2. Their child process commits after every
# batch and signals itself just before its ``at``-th commit: the kill or pause lands at the same row on
# a fast machine and a slow one (waiting on the clock from outside did not: a fast CI machine finished
# all 24 images inside the first 5 s commit window).
SLOW = ["--model", "ssd300_vgg16", "--layers", "fc7,conv8_2", "--weights", "random:0", "--batch-size", "2"]
CHILD = ("import os, sys; import fakesegment_nb.extract as e; e.COMMIT_EVERY_S = 0.0; calls = [0]\n"
         "commit = e._Writer._commit\n"
         "def signalled(self):\n"
         "    calls[0] += 1\n"
         "    if calls[0] == {at}: os.kill(os.getpid(), {sig})\n"
         "    commit(self)\n"
         "e._Writer._commit = signalled\n"
         "from fakesegment_nb.cli import main; sys.exit(main(sys.argv[1:]))")


def _start(real, syn, store, sig, at):
    """An extraction that sends itself ``sig`` before its ``at``-th commit (``at - 1`` batches committed)."""
    return subprocess.Popen([sys.executable, "-c", CHILD.format(at=at, sig=int(sig)), "extract", "--real", real,
                             "--synthetic", syn, "--store", store, *SLOW, "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_stopped(proc, timeout=120):
    t0 = time.time()
    while Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "T":
        assert proc.poll() is None, proc.communicate()
        assert time.time() - t0 < timeout
        time.sleep(0.02)


def test_kill_9_then_rerun_completes_the_store(tmp_path, many_dirs):
    real, syn = many_dirs
    ref = tmp_path / "ref.zarr"
    # the reference runs like the killed one, in a CLI process: oneDNN's float32 sums depend on the
    # thread count, which earlier tests may have changed in this one
    assert run("extract", "--real", real, "--synthetic", syn, "--store", ref, *SLOW, "--quiet").returncode == 0
    store = tmp_path / "killed.zarr"
    proc = _start(real, syn, store, signal.SIGKILL, at=4)  # 3 batches committed, the 4th written, not committed
    proc.communicate(timeout=300)
    assert proc.returncode == -signal.SIGKILL
    n = _committed(store)
    assert n == 6
    partial = fs.open_store(store)  # readable right after the kill
    assert partial.sizes["image"] == n
    again = run("extract", "--real", real, "--synthetic", syn, "--store", store, *SLOW, "--quiet")
    assert again.returncode == 0, again.stderr
    assert f"{24 - n} images added, {n} already stored" in again.stdout
    a, b = fs.open_store(ref), fs.open_store(store)
    assert fs.image_table(a).drop(columns="path").equals(fs.image_table(b).drop(columns="path"))
    for layer in fs.layer_names(a):
        np.testing.assert_array_equal(fs.feature_layer(a, layer).values, fs.feature_layer(b, layer).values)
    assert not list(store.rglob("*.partial"))


def test_two_writers_one_refused_nothing_lost(tmp_path, many_dirs):
    real, syn = many_dirs
    store = tmp_path / "shared.zarr"
    # the first writer pauses itself mid-run, holding its lock, while the second one tries
    first = _start(real, syn, store, signal.SIGSTOP, at=2)
    try:
        _wait_stopped(first)
        assert _committed(store) == 2
        second = run("extract", "--real", real, "--synthetic", syn, "--store", store, *SLOW, "--quiet")
    finally:
        os.kill(first.pid, signal.SIGCONT)
    assert "another process is extracting" in one_line_error(second)
    out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    assert "24 images added" in out
    assert _committed(store) == 24
    table = fs.image_table(store)
    assert table.index.is_unique and len(table) == 24


def test_lock_is_held_in_process_too(tmp_path, pair_dirs):
    store = tmp_path / "s.zarr"
    with StoreWriter(store).locked():
        p = run("extract", "--real", pair_dirs[0], "--synthetic", pair_dirs[1], "--store", store,
                "--model", FAST_MODEL, "--layers", ",".join(FAST_LAYERS), "--quiet")
    assert "another process is extracting" in one_line_error(p)
