"""StoreWriter over its two targets, and the consolidated metadata that lets plain xarray open a
store at once (the commit protocol itself is tested in test_extract.py and test_cli.py)."""

import json
import warnings

import numpy as np
import pandas as pd
import pytest
import xarray as xr
import zarr

import fakesegment_nb as fs
from fakesegment_nb.targets import LocalTarget, RemoteTarget, StoreBusy, store_target
from fakesegment_nb.writer import StoreWriter, consolidate

LAYERS = {"a": (4, 3, 3), "b": (2, 2, 2)}


def writer_with(url, n: int, **kw) -> StoreWriter:
    """A store of ``n`` handmade images (no network, no model)."""
    w = StoreWriter(url, **kw)
    w.create({"model": "handmade", "weights": "random:0", "weights_trained": False, "input_size": [0, 0],
              "layers": list(LAYERS)}, LAYERS)
    add(w, n)
    return w


def add(w: StoreWriter, n: int) -> None:
    start = w.reserve(n)
    rng = np.random.default_rng(start)
    w.write_features(start, {k: rng.normal(size=(n, *s)) for k, s in LAYERS.items()})
    ids = [f"real/img{i}.png" for i in range(start, start + n)]
    w.commit(pd.DataFrame({"image": ids, "domain": "real", "path": ids, "pair": "", "height": 1, "width": 1,
                           "sha256": [f"h{i}" for i in range(start, start + n)]}))


def open_plainly(path) -> xr.DataTree:
    """What a plain xarray user writes; any warning (no consolidated metadata, ...) fails."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return xr.open_datatree(str(path), engine="zarr")


def test_each_place_gets_its_target_and_says_whether_its_lock_is_exclusive(tmp_path):
    assert isinstance(store_target(tmp_path / "s.zarr"), LocalTarget)
    assert isinstance(store_target(f"file://{tmp_path}/s.zarr"), LocalTarget)
    assert store_target(f"file://{tmp_path}/s.zarr").url == f"{tmp_path}/s.zarr"
    assert isinstance(store_target("memory://x/s.zarr"), RemoteTarget)
    assert LocalTarget.exclusive is True and RemoteTarget.exclusive is False


@pytest.mark.parametrize("url", ["local", "memory://writer-test/lock.zarr"])
def test_a_second_writer_is_refused_and_the_lock_released(tmp_path, url):
    url = str(tmp_path / "s.zarr") if url == "local" else url
    first, second = StoreWriter(url), StoreWriter(url)
    with first.locked():
        with pytest.raises(StoreBusy):
            with second.locked():
                pass
    with second.locked():  # released: the next writer gets it
        pass


def test_create_clears_an_earlier_store_but_keeps_the_locked_folder(tmp_path):
    path = tmp_path / "s.zarr"
    w = writer_with(path, 3)
    (path / "leftover.txt").write_text("x")
    with w.locked():
        w.create({"model": "handmade", "weights": "random:0", "layers": list(LAYERS), "input_size": [0, 0]}, LAYERS)
        assert path.is_dir() and not (path / "leftover.txt").exists()
    assert w.committed() == 0 and fs.open_store(path).sizes["image"] == 0


def test_remote_store_is_created_cleared_and_consolidated():
    url = "memory://writer-test/remote.zarr"
    w = writer_with(url, 3)
    assert fs.open_store(url).sizes["image"] == 3
    w.create({"model": "handmade", "weights": "random:0", "layers": list(LAYERS), "input_size": [0, 0]}, LAYERS)
    add(w, 2)
    assert fs.open_store(url).sizes["image"] == 2
    assert open_plainly(url)["layers/a/features"].shape == (2, *LAYERS["a"])


def test_a_committed_store_opens_plainly_without_a_warning(tmp_path, fast_store):
    meta = json.loads((fast_store / "zarr.json").read_text())
    assert "consolidated_metadata" in meta  # the extraction's last commit wrote it
    tree = open_plainly(fast_store)
    assert tree.sizes["image"] == 8 and tree.attrs["images_committed"] == 8
    assert tree["layers/layer2/features"].shape[0] == 8
    ref = fs.open_store(fast_store)
    np.testing.assert_array_equal(tree["layers/layer2/features"].values, fs.feature_layer(ref, "layer2").values)


def test_readers_see_images_committed_after_they_opened(tmp_path):
    path = tmp_path / "s.zarr"
    w = writer_with(path, 3)
    before, plain = fs.open_store(path), open_plainly(path)
    assert before.sizes["image"] == plain.sizes["image"] == 3
    add(w, 2)
    assert fs.open_store(path).sizes["image"] == 5  # open_store reads the metadata itself
    assert open_plainly(path).sizes["image"] == 5  # and the consolidated copy follows each commit
    assert zarr.open_group(str(path), mode="r")["layers/b/features"].shape[0] == 5
    assert before.sizes["image"] == 3  # an open tree keeps what it saw


def test_rows_reserved_then_trimmed_leave_the_store_consolidated(tmp_path):
    path = tmp_path / "s.zarr"
    w = writer_with(path, 3)
    w.reserve(4)  # a run that died after reserving rows
    fresh = StoreWriter(path)
    assert fresh.repair() == 3
    assert all(open_plainly(path)[f"layers/{k}/features"].shape[0] == 3 for k in LAYERS)


def test_consolidate_makes_groups_written_later_visible(tmp_path):
    """maps and stats write their groups through xarray; consolidate(path) afterwards."""
    path = tmp_path / "s.zarr"
    w = writer_with(path, 3)
    maps = xr.Dataset({"score": (("image", "y", "x"), np.ones((3, 4, 4), np.float32))})
    maps.to_zarr(path, group="maps/paired", mode="w", consolidated=False, zarr_format=3)
    assert "maps" in fs.open_store(path).children  # fresh readers see it at once
    assert consolidate(path) is True
    assert float(open_plainly(path)["maps/paired/score"].sum()) == 3 * 16
    add(w, 1)  # the maps now cover fewer images: out of what readers see at once, deleted at the end
    tree = open_plainly(path)
    assert tree.sizes["image"] == 4 and "paired" not in tree.get("maps", xr.DataTree()).children
    with w.locked():  # an extraction holds the store: maps and stats leave publishing to its commits
        assert consolidate(path) is False
    assert w.drop_stale_maps() == ["maps/paired"]
    assert "paired" not in open_plainly(path).get("maps", xr.DataTree()).children


# --------------------------------------------------------------------------------------------
# a store that plain xarray opens at every moment of a run (issue 21)

# mobilenet_v3_small's early stages: a fast network whose small layers chunk 16 images together
# (so commits land inside chunks, which are rewritten while readers read them)
RUN_MODEL = ["--model", "torchvision:mobilenet_v3_small", "--layers", "features.3,features.6",
             "--weights", "random:0", "--batch-size", "4", "--quiet"]
# a child extraction that commits every 0.1 s (5 s in real runs): a few hundred images, many commits
CHILD = ("import sys; import fakesegment_nb.extract as e; e.COMMIT_EVERY_S = 0.1; "
         "from fakesegment_nb.cli import main; sys.exit(main(sys.argv[1:]))")


@pytest.fixture(scope="module")
def run_images(tmp_path_factory):
    """150 real and 150 synthetic 24 x 24 noise images."""
    from support import noise_images

    root = tmp_path_factory.mktemp("run-images")
    rng = np.random.default_rng(3)
    return tuple(noise_images(root / d, [f"img_{i:03d}.png" for i in range(150)], 24, rng)
                 for d in ("real", "synthetic"))


def start_extract(real, syn, store):
    import subprocess
    import sys

    argv = ["extract", "--real", str(real), "--synthetic", str(syn), "--store", str(store), *RUN_MODEL]
    return subprocess.Popen([sys.executable, "-c", CHILD, *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def read_plainly(path):
    """What a colleague's notebook sees now: None before the store exists, else (ids, tree).

    Asserts that the tree is aligned (every group with an image dimension has the root's
    length), that it is the committed state, and that its last committed rows hold features."""
    if not (path / "zarr.json").exists():
        return None
    tree = open_plainly(path)  # no warning, no misaligned group
    if "layers" not in tree.attrs:  # being created: an empty tree
        assert not tree.children and "image" not in tree.sizes
        return None
    n = tree.sizes["image"]
    assert tree.attrs["images_committed"] == n
    for node in tree.subtree:
        if "image" in node.dims:
            assert node.sizes["image"] == n, node.path
    ids = [str(i) for i in tree["image"].values]
    assert len(set(ids)) == n and all(ids)
    if n:
        for layer in tree.attrs["layers"]:
            assert np.isfinite(tree[f"layers/{layer}/features"].isel(image=n - 1).values).all()
    return ids, tree


def test_plain_xarray_opens_the_committed_store_at_every_poll_of_a_run(tmp_path, run_images):
    store = tmp_path / "s.zarr"
    proc = start_extract(*run_images, store)
    seen, sizes = [], set()
    try:
        while proc.poll() is None:
            got = read_plainly(store)
            if got is None:
                continue
            ids, _ = got
            if seen:  # committed rows never go backwards, and never change
                assert len(ids) >= len(seen) and ids[:len(seen)] == seen
            seen = ids
            sizes.add(len(ids))
            ours = list(fs.image_table(fs.open_store(store)).index)  # open_store agrees (a commit may fall between)
            assert ours[:len(ids)] == ids or ids[:len(ours)] == ours
    finally:
        out, err = proc.communicate()
    assert proc.returncode == 0, err
    assert "300 images added" in out
    ids, _ = read_plainly(store)
    assert len(ids) == 300 and ids == list(fs.image_table(store).index) and ids[:len(seen)] == seen
    assert len(sizes - {0, 300}) >= 3, f"the polls saw only {sorted(sizes)} images: not a run in progress"


def test_after_kill_9_plain_xarray_opens_the_last_commit_and_a_rerun_completes_it(tmp_path, run_images):
    import os
    import signal
    import time

    store = tmp_path / "s.zarr"
    kills = []
    for delay in (0.0, 0.35):  # two kills, at different moments of the commit cycle
        proc = start_extract(*run_images, store)
        start = int(zarr.open_group(str(store), mode="r").attrs["images_committed"]) if kills else 0
        t0 = time.time()
        while True:  # until this run has committed something of its own
            assert proc.poll() is None, proc.communicate()
            assert time.time() - t0 < 240
            if (store / "zarr.json").exists():
                attrs = zarr.open_group(str(store), mode="r").attrs
                if int(attrs.get("images_committed", 0)) > start:
                    break
            time.sleep(0.02)
        time.sleep(delay)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        ids, tree = read_plainly(store)  # before any repair
        assert start < len(ids) < 300, "the kill must land mid-run"
        assert list(fs.image_table(fs.open_store(store)).index) == ids
        kills.append(ids)
    assert kills[1][:len(kills[0])] == kills[0]
    out = start_extract(*run_images, store).communicate()
    assert f"{300 - len(kills[1])} images added, {len(kills[1])} already stored" in out[0], out
    ids, tree = read_plainly(store)
    table = fs.image_table(store)
    assert len(ids) == 300 and table.index.is_unique and ids == list(table.index)
    assert ids[:len(kills[1])] == kills[1]
    assert not list(store.rglob("*.partial"))
