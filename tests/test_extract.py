"""Extraction into the store: the DESIGN.md section 3 contract, resume, refusal, bad input."""

import shutil

import numpy as np
import pytest
import torch
import xarray as xr
import zarr

import fakesegment_nb as fs
from fakesegment_nb.errors import FakesegmentError, ParameterError
from fakesegment_nb.extract import extract
from fakesegment_nb.images import load_rgb
from fakesegment_nb.writer import StoreWriter, channel_chunk, image_chunk

from support import FAST_LAYERS, FAST_MODEL, make_pair_dirs


def test_schema_is_the_contract(fast_store):
    tree = xr.open_datatree(fast_store, engine="zarr", consolidated=False)
    root = tree.to_dataset(inherit=False)
    assert root.sizes["image"] == 8
    for v in ("domain", "path", "pair", "height", "width", "sha256"):
        assert v in root and root[v].dims == ("image",)
    for a in ("model", "weights", "weights_trained", "input_size", "layers", "torch", "torchvision",
              "fakesegment_nb", "created", "images_committed"):
        assert a in tree.attrs
    assert tree.attrs["model"] == FAST_MODEL and tree.attrs["weights"] == "random:0"
    assert tree.attrs["weights_trained"] is False and "untrained" in tree.attrs["weights_warning"]
    assert list(tree["layers"].children) == sorted(tree.attrs["layers"]) or set(tree["layers"].children) == set(tree.attrs["layers"])
    ids = [str(i) for i in root["image"].values]
    assert ids[:4] == ["real/astronaut.png", "real/chelsea.png", "real/coffee.png", "real/rocket.png"]
    assert dict(zip(ids, map(str, root["pair"].values)))["synthetic/coffee.png"] == "real/coffee.png"
    feats = tree["layers/layer1/features"]
    assert feats.dims == ("image", "channel", "y", "x") and feats.dtype == np.float16
    arr = zarr.open_group(str(fast_store), mode="r")["layers/layer1/features"]
    # layer1 (64x56x56, 392 KiB a map set) chunks 4 images; the fixture wrote them 3 at a time
    assert arr.metadata.zarr_format == 3 and arr.chunks == (4, *arr.shape[1:])
    assert arr.nbytes_stored() < arr.nbytes  # compressed
    assert tree.attrs["images_committed"] == 8


def test_chunks_hold_whole_layers_up_to_a_cap():
    assert channel_chunk(512, 38, 38) == 512 and channel_chunk(672, 20, 20) == 672  # ssd300, ssdlite
    assert channel_chunk(256, 200, 200) == 16  # 2 MiB / (200*200*2 bytes) = 26 channels
    assert channel_chunk(3, 2000, 2000) == 1
    # ssd300: conv4_3 fills a chunk alone, fc7 two images, conv8_2..conv11_2 the cap of 16
    assert [image_chunk(*s) for s in ((512, 38, 38), (1024, 19, 19), (512, 10, 10), (256, 1, 1))] == [1, 2, 16, 16]
    assert image_chunk(256, 200, 200) == 1


def test_features_equal_torchvision_backbone_of_decoded_image(tmp_path, pair_dirs):
    """ssd300_vgg16 (the default): features == model.backbone(model.transform([img])[0].tensors)."""
    from torchvision.models.detection import ssd300_vgg16

    real, syn = tmp_path / "r", tmp_path / "s"
    real.mkdir(), syn.mkdir()
    shutil.copy(pair_dirs[0] / "coffee.png", real)
    shutil.copy(pair_dirs[1] / "rocket.png", syn)
    store = tmp_path / "vgg.zarr"
    extract(real, syn, store, weights="random:0", batch_size=2, progress=False)
    torch.manual_seed(0)
    model = ssd300_vgg16(weights=None, weights_backbone=None).eval()
    tree = fs.open_store(store)
    assert fs.layer_names(tree) == ["conv4_3", "fc7", "conv8_2", "conv9_2", "conv10_2", "conv11_2"]
    img = torch.from_numpy(load_rgb(syn / "rocket.png")).permute(2, 0, 1).float() / 255
    with torch.no_grad():
        want = model.backbone(model.transform([img])[0].tensors)
    for i, name in enumerate(fs.layer_names(tree)):
        got = fs.feature_layer(tree, name).sel(image="synthetic/rocket.png").values.astype(np.float32)
        ref = want[str(i)][0].numpy()
        assert got.shape == ref.shape
        np.testing.assert_allclose(got, ref, rtol=2e-3, atol=2e-3 * float(np.abs(ref).max()))


def test_rerun_skips_stored_and_appends_new(tmp_path, pair_dirs):
    real, syn = make_pair_dirs(tmp_path / "data", names=("coffee", "rocket"))
    store = tmp_path / "s.zarr"
    r1 = extract(real, syn, store, model=FAST_MODEL, layers=FAST_LAYERS, weights="random:0", batch_size=3, progress=False)
    assert (r1.added, r1.already_stored) == (4, 0)
    before = fs.feature_layer(fs.open_store(store), "layer2").values
    r2 = extract(real, syn, store, model=FAST_MODEL, layers=FAST_LAYERS, weights="random:0", batch_size=3, progress=False)
    assert (r2.added, r2.already_stored) == (0, 4)
    shutil.copy(pair_dirs[0] / "astronaut.png", real)  # a real image whose synthetic twin comes later
    r3 = extract(real, syn, store, model=FAST_MODEL, layers=FAST_LAYERS, weights="random:0", batch_size=3, progress=False)
    assert (r3.added, r3.already_stored) == (1, 4)
    shutil.copy(pair_dirs[1] / "astronaut.png", syn)
    extract(real, syn, store, model=FAST_MODEL, layers=FAST_LAYERS, weights="random:0", batch_size=3, progress=False)
    tree = fs.open_store(store)
    table = fs.image_table(tree)
    assert len(table) == 6 and table.index.is_unique
    assert table.loc["real/astronaut.png", "pair"] == "synthetic/astronaut.png"  # pair updated later
    np.testing.assert_array_equal(fs.feature_layer(tree, "layer2").values[:4], before)


def test_corrupt_image_is_reported_and_skipped(tmp_path, pair_dirs):
    real, syn = make_pair_dirs(tmp_path / "data", names=("coffee",))
    (syn / "broken.png").write_bytes((syn / "coffee.png").read_bytes()[:300])
    messages = []
    res = extract(real, syn, tmp_path / "s.zarr", model=FAST_MODEL, layers=FAST_LAYERS, weights="random:0", progress=False,
                  report=messages.append)
    assert res.added == 2 and res.failed == ["synthetic/broken.png"]
    assert any("broken.png" in m and "cannot decode" in m for m in messages)
    # the row reserved for it is trimmed: plain xarray reads the store, every layer has 2 images
    tree = xr.open_datatree(tmp_path / "s.zarr", engine="zarr", consolidated=False)
    assert all(tree[f"layers/{name}/features"].shape[0] == 2 for name in FAST_LAYERS)


def test_folders_of_unreadable_images_only_are_refused_in_one_line(tmp_path, capsys):
    from fakesegment_nb.cli import main

    real, syn = tmp_path / "real", tmp_path / "syn"
    for d in (real, syn):
        d.mkdir()
        (d / "broken.png").write_bytes(b"not an image")
    (real / "cut.jpg").write_bytes(b"\xff\xd8\xff\xe0" + bytes(200))
    with pytest.raises(FakesegmentError, match="none of the 3 images could be decoded"):
        extract(real, syn, tmp_path / "s.zarr", model=FAST_MODEL, layers=FAST_LAYERS, weights="random:0",
                progress=False, report=lambda m: None)
    capsys.readouterr()
    rc = main(["extract", "--real", str(real), "--synthetic", str(syn), "--store", str(tmp_path / "t.zarr"),
               "--model", FAST_MODEL, "--layers", ",".join(FAST_LAYERS), "--weights", "random:0", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    assert [l for l in err.splitlines() if l.startswith("fakesegment: error")] == [
        "fakesegment: error: none of the 3 images could be decoded (each is named above): nothing was stored"]


def test_store_from_another_network_is_refused_and_kept(tmp_path, fast_store, pair_dirs):
    store = tmp_path / "s.zarr"
    shutil.copytree(fast_store, store)
    before = fs.image_table(store)
    with pytest.raises(FakesegmentError, match=r"made with another network: weights 'random:0' \(this run: 'random:1'\)"):
        extract(*pair_dirs, store, model=FAST_MODEL, layers=FAST_LAYERS, weights="random:1", progress=False)
    with pytest.raises(FakesegmentError, match="model 'torchvision:resnet18'"):
        extract(*pair_dirs, store, model="ssdlite320_mobilenet_v3_large", weights="random:0", progress=False)
    assert fs.image_table(store).equals(before)


def test_bad_arguments_name_the_parameter_and_the_cli_names_the_flag(tmp_path, fast_store, pair_dirs, capsys):
    from fakesegment_nb.cli import main

    store = tmp_path / "s.zarr"
    shutil.copytree(fast_store, store)
    common = ["extract", "--real", str(pair_dirs[0]), "--synthetic", str(pair_dirs[1]), "--quiet"]
    cases = [  # (library call, its parameter and message start, CLI arguments, the CLI's line)
        (dict(batch_size=0), "batch_size", "batch_size must be at least 1",
         ["--store", str(tmp_path / "new.zarr"), "--batch-size", "0"], "--batch-size must be at least 1"),
        (dict(model="torchvision:resnet18"), "layers", "layers is required for torchvision:resnet18 (graph nodes",
         ["--store", str(tmp_path / "new.zarr"), "--model", "torchvision:resnet18"],
         "--layers is required for torchvision:resnet18 (graph nodes"),
        (dict(model="ssdlite320_mobilenet_v3_large"), "store", f"store {store} was made with another network",
         ["--store", str(store), "--model", "ssdlite320_mobilenet_v3_large"],
         f"--store {store} was made with another network"),
    ]
    for kwargs, param, message, argv, line in cases:
        with pytest.raises(ParameterError) as exc:
            extract(*pair_dirs, kwargs.pop("store", store if param == "store" else tmp_path / "new.zarr"),
                    weights="random:0", progress=False, **kwargs)
        assert exc.value.param == param and str(exc.value).startswith(message) and "--" not in str(exc.value)
        assert main([*common, *argv, "--weights", "random:0"]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"fakesegment: error: {line}"), err
    assert not (tmp_path / "new.zarr" / "zarr.json").exists() and fs.image_table(store).equals(fs.image_table(fast_store))


def test_other_architecture_and_fsspec_url(tmp_path, pair_dirs):
    url = f"file://{tmp_path}/resnet.zarr"
    extract(*pair_dirs, url, model="torchvision:resnet18", layers=["layer2", "layer4"], weights="random:0",
            progress=False)
    tree = fs.open_store(url)
    assert tree.attrs["model"] == "torchvision:resnet18" and tree.attrs["input_size"] == [224, 224]
    assert fs.feature_layer(tree, "layer2").shape == (8, 128, 28, 28)
    assert fs.feature_layer(tree, "layer4").shape == (8, 512, 7, 7)


def test_memory_url_store(pair_dirs):
    url = "memory://fakesegment-test/store.zarr"
    extract(*pair_dirs, url, model=FAST_MODEL, layers=FAST_LAYERS, weights="random:0", progress=False)
    res = extract(*pair_dirs, url, model=FAST_MODEL, layers=FAST_LAYERS, weights="random:0", progress=False)
    assert res.added == 0 and res.already_stored == 8
    assert fs.open_store(url).sizes["image"] == 8


def test_rows_written_but_never_committed_stay_out_of_sight_and_are_deleted(tmp_path, fast_store):
    store = tmp_path / "s.zarr"
    shutil.copytree(fast_store, store)
    w = StoreWriter(store)
    start = w.reserve(6)  # rows written by a run that died before committing them
    assert start == 8
    w.write_features(start, {l: np.ones((6, *a.shape[1:]), np.float16) for l, a in w._feature_arrays().items()})
    # layer1 chunks 4 images: rows 8-13 fill its chunks 2 and 3, past the stored shape
    assert sorted(p.name for p in (store / "layers/layer1/features").glob("c.*")) == [f"c.{i}.0.0.0" for i in range(4)]
    for tree in (fs.open_store(store), xr.open_datatree(store, engine="zarr"),
                 xr.open_datatree(store, engine="zarr", consolidated=False)):
        assert all(tree[f"layers/{l}/features"].shape[0] == 8 for l in FAST_LAYERS)
    assert w.repair() == 8
    assert sorted(p.name for p in (store / "layers/layer1/features").glob("c.*")) == ["c.0.0.0.0", "c.1.0.0.0"]
    assert zarr.open_group(str(store))["layers/layer2/features"].shape[0] == 8
    np.testing.assert_array_equal(fs.feature_layer(store, "layer1").values, fs.feature_layer(fast_store, "layer1").values)


def test_feature_map_helpers(fast_store):
    tree = fs.open_store(fast_store)
    m = fs.feature_map(tree, "synthetic/coffee.png", "layer2", 7)
    assert m.dims == ("y", "x") and m.dtype == np.float32
    full = fs.feature_layer(tree, "layer2").sel(image="synthetic/coffee.png").values
    np.testing.assert_array_equal(m.values, full[7].astype(np.float32))
    with pytest.raises(FakesegmentError, match="no image"):
        fs.feature_map(tree, "real/none.png", "layer2", 0)
    with pytest.raises(FakesegmentError, match="no layer"):
        fs.feature_layer(tree, "conv4_3")
    table = fs.image_table(fast_store)
    assert list(table.columns) == ["domain", "set", "path", "pair", "height", "width", "sha256"]
    assert list(table["set"]) == [""] * 4 + ["synthetic"] * 4
    assert (table["height"] == 128).all()


def test_open_store_on_non_store(tmp_path):
    with pytest.raises(FakesegmentError, match="not a feature store"):
        fs.open_store(tmp_path / "nothing.zarr")


def test_float16_underflow_is_reported(tmp_path, pair_dirs):
    """ssdlite's random initialisation gives activations ~1e-13: float16 flushes them to zero."""
    messages = []
    extract(*pair_dirs, tmp_path / "lite.zarr", model="ssdlite320_mobilenet_v3_large", weights="random:0",
            progress=False, report=messages.append)
    warned = [m for m in messages if "underflow float16" in m]
    assert any(m.startswith("warning: layer c4_expand:") for m in warned)
    silent = []
    extract(*pair_dirs, tmp_path / "res.zarr", model=FAST_MODEL, layers=FAST_LAYERS, weights="random:0",
            progress=False, report=silent.append)
    assert not [m for m in silent if "float16" in m]
    assert float(abs(fs.feature_layer(fs.open_store(tmp_path / "res.zarr"), "layer3")).max()) > 0.1


def test_open_store_mid_commit_shows_the_committed_rows(tmp_path, fast_store):
    """A kill between the root arrays' appends leaves them of different lengths: still readable."""
    store = tmp_path / "s.zarr"
    shutil.copytree(fast_store, store)
    g = zarr.open_group(str(store))
    g["domain"].resize((9,))  # as if the commit of a 9th image died after its first array
    g["image"].resize((10,))
    tree = fs.open_store(store)
    assert tree.sizes["image"] == 8 and tree.attrs["model"] == FAST_MODEL
    assert fs.feature_layer(tree, "layer2").sizes["image"] == 8
    assert len(fs.image_table(tree)) == 8
    assert StoreWriter(store).repair() == 8
    assert xr.open_datatree(store, engine="zarr", consolidated=False).sizes["image"] == 8


def test_maps_from_before_new_images_are_dropped(tmp_path, pair_dirs):
    real, syn = make_pair_dirs(tmp_path / "data", names=("coffee",))
    store = tmp_path / "s.zarr"
    extract(real, syn, store, model=FAST_MODEL, layers=FAST_LAYERS, weights="random:0", progress=False)
    maps = xr.Dataset({"score": (("image", "y", "x"), np.zeros((2, 4, 4), np.float32))})
    maps.to_zarr(store, group="maps/paired", mode="w", consolidated=False, zarr_format=3)
    assert "maps" in fs.open_store(store).children
    shutil.copy(pair_dirs[0] / "rocket.png", real)
    messages = []
    extract(real, syn, store, model=FAST_MODEL, layers=FAST_LAYERS, weights="random:0", progress=False,
            report=messages.append)
    assert any("maps/paired removed" in m for m in messages)
    tree = fs.open_store(store)
    assert tree.sizes["image"] == 3
    assert "maps" not in tree.children or "paired" not in tree["maps"].children
    xr.open_datatree(store, engine="zarr", consolidated=False)  # the contract reader opens it too


def test_open_store_leaves_out_stale_maps_with_a_warning(tmp_path, fast_store):
    store = tmp_path / "s.zarr"
    shutil.copytree(fast_store, store)
    maps = xr.Dataset({"score": (("image", "y", "x"), np.zeros((5, 4, 4), np.float32))})
    maps.to_zarr(store, group="maps/paired", mode="w", consolidated=False, zarr_format=3)
    with pytest.warns(UserWarning, match="maps/paired covers 5 of 8 images"):
        tree = fs.open_store(store)
    assert tree.sizes["image"] == 8 and "paired" not in tree["maps"].children


def test_commit_cut_after_every_root_array_grew(tmp_path, pair_dirs):
    """Appending grows a root array before writing its rows. A kill after the last one grew (all
    of equal length, some rows unwritten) must not count those rows: the rerun adds them."""
    store = tmp_path / "s.zarr"
    kw = dict(model=FAST_MODEL, layers=FAST_LAYERS, weights="random:0", progress=False)
    first = extract(pair_dirs[0], pair_dirs[1], store, **kw, batch_size=4)
    assert first.added == 8
    g = zarr.open_group(str(store))
    assert g.attrs["images_committed"] == 8
    g.attrs["images_committed"] = 6  # the last commit's arrays grew, its marker was never written
    for name in ("image", "domain", "path", "pair", "height", "width", "sha256"):
        rows = g[name][:]
        rows[6:] = "" if rows.dtype.kind in "OUT" else 0  # ... nor all of its rows
        g[name][:] = rows
    tree = fs.open_store(store)
    assert tree.sizes["image"] == 6 and fs.feature_layer(tree, "layer2").sizes["image"] == 6
    assert list(fs.image_table(tree)["sha256"] != "") == [True] * 6
    again = extract(pair_dirs[0], pair_dirs[1], store, **kw)
    assert (again.added, again.already_stored, again.notes) == (2, 6, [])
    table = fs.image_table(store)
    assert len(table) == 8 and (table["sha256"] != "").all() and table.index.is_unique


def test_a_run_that_fails_midway_keeps_the_batches_it_wrote(tmp_path, pair_dirs, monkeypatch):
    """Batches are committed every few seconds and when the run ends for any reason (Ctrl-C,
    an error): what was written before the failure is kept and the rerun adds the rest."""
    from fakesegment_nb.backbones import Backbone

    calls, real_run = [], Backbone.features  # the forward pass of each batch

    def failing(*a, **k):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_run(*a, **k)

    monkeypatch.setattr(Backbone, "features", failing)
    store = tmp_path / "s.zarr"
    kw = dict(model=FAST_MODEL, layers=FAST_LAYERS, weights="random:0", progress=False, batch_size=2)
    with pytest.raises(KeyboardInterrupt):
        extract(*pair_dirs, store, **kw)
    assert fs.open_store(store).sizes["image"] == 4
    monkeypatch.setattr(Backbone, "features", real_run)
    again = extract(*pair_dirs, store, **kw)
    assert (again.added, again.already_stored) == (4, 4)
    assert xr.open_datatree(store, engine="zarr", consolidated=False)["layers/layer3/features"].shape[0] == 8


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (CI and the dev machine have none)")
@pytest.mark.parametrize("model,layers,weights", [("ssd300_vgg16", None, "random:0"),
                                                  (FAST_MODEL, FAST_LAYERS, "random:0"),
                                                  ("efficientnet_lite0", None, "auto")])
def test_cuda_features_match_cpu_and_a_cpu_run_completes_the_store(tmp_path, pair_dirs, model, layers, weights):
    """--device cuda: same features as on the CPU (cuDNN may sum in TF32), same store identity."""
    real, syn = pair_dirs
    half = tmp_path / "half"
    (half / "r").mkdir(parents=True), (half / "s").mkdir()
    for n in ("coffee.png", "rocket.png"):
        shutil.copy(real / n, half / "r"), shutil.copy(syn / n, half / "s")
    gpu, cpu = tmp_path / "gpu.zarr", tmp_path / "cpu.zarr"
    extract(half / "r", half / "s", gpu, model=model, layers=layers, weights=weights, batch_size=2,
            device="cuda", progress=False)
    added = extract(real, syn, gpu, model=model, layers=layers, weights=weights, batch_size=2, progress=False)
    assert (added.added, added.already_stored) == (4, 4)
    extract(real, syn, cpu, model=model, layers=layers, weights=weights, batch_size=2, progress=False)
    tg, tc = fs.open_store(gpu), fs.open_store(cpu)
    ids = list(fs.image_table(tc).index)
    assert sorted(fs.image_table(tg).index) == sorted(ids)
    for name in fs.layer_names(tc):
        want = fs.feature_layer(tc, name).sel(image=ids).values.astype(np.float32)
        got = fs.feature_layer(tg, name).sel(image=ids).values.astype(np.float32)
        np.testing.assert_allclose(got, want, rtol=2e-2, atol=2e-2 * float(np.abs(want).max()))


def test_features_are_backbone_run_on_the_same_batches_exactly(tmp_path, pair_dirs):
    """Images are preprocessed one by one in the decoding threads and the network runs on their
    batch: the store holds what Backbone.run gives for the same batches, bit for bit."""
    from fakesegment_nb.weights import load_backbone

    store = tmp_path / "s.zarr"
    extract(*pair_dirs, store, model=FAST_MODEL, layers=FAST_LAYERS, weights="random:0", batch_size=3, progress=False)
    backbone = load_backbone(FAST_MODEL, "random:0", FAST_LAYERS)[0]
    table = fs.image_table(store)
    arrays = [load_rgb(p) for p in table["path"]]
    want = [backbone.run(arrays[i:i + 3]) for i in range(0, len(arrays), 3)]
    for layer in FAST_LAYERS:
        np.testing.assert_array_equal(fs.feature_layer(store, layer).values,
                                      np.concatenate([w[layer] for w in want]))
