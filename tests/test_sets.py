"""Named synthetic sets in one store (fakesegment_nb.sets): real images stored once, ids unique
across sets, pairs within a set, stores from before sets, and the bad inputs."""

import shutil

import numpy as np
import pytest
import xarray as xr
import zarr
from PIL import Image

import fakesegment_nb as fs
from fakesegment_nb.cli import main
from fakesegment_nb.errors import ParameterError
from fakesegment_nb.extract import extract
from fakesegment_nb.writer import consolidate

from support import FAST_LAYERS, FAST_MODEL, copy_store

KW = dict(model=FAST_MODEL, layers=FAST_LAYERS, weights="random:0", batch_size=4, progress=False)


def darker(src, dest, rename=lambda n: n):
    """A copy of folder ``src`` with every image darkened (other content: another set)."""
    dest.mkdir(parents=True)
    for p in sorted(src.iterdir()):
        a = np.asarray(Image.open(p).convert("RGB")).astype(int)
        Image.fromarray(np.clip(a - 30, 0, 255).astype(np.uint8)).save(dest / rename(p.name))
    return dest


def features(store):
    tree = fs.open_store(store)
    return {l: fs.feature_layer(tree, l).values for l in fs.layer_names(tree)}


def test_a_second_set_adds_only_its_images_and_pairs_within_itself(tmp_path, pair_dirs, fast_store):
    real, syn = pair_dirs
    store = copy_store(fast_store, tmp_path)
    before = features(store)
    # the second set pairs by stem with a copy of the real folder whose files are renamed: the real
    # images are already stored (same sha256), so they are not extracted again and keep their ids
    real2 = tmp_path / "photos"
    real2.mkdir()
    for p in real.iterdir():
        shutil.copy(p, real2 / f"x_{p.name}")
    enh = darker(syn, tmp_path / "enhanced", rename=lambda n: f"x_{n}")
    res = extract(real2, enh, store, **KW)
    assert (res.added, res.already_stored, res.set) == (4, 4, "enhanced")
    table = fs.image_table(store)
    assert len(table) == 12 and table.index.is_unique
    assert (table["domain"] == "real").sum() == 4  # stored once
    assert list(table["set"]) == [""] * 4 + ["synthetic"] * 4 + ["enhanced"] * 4
    assert fs.set_names(store) == ["synthetic", "enhanced"] and fs.set_names(table) == ["synthetic", "enhanced"]
    # ids: the first set keeps synthetic/<path>, a later set is <set>/<path>
    assert list(table.index[8:]) == [f"enhanced/x_{n}.png" for n in ("astronaut", "chelsea", "coffee", "rocket")]
    found = fs.partners(table)
    assert list(found.columns) == ["image", "pair", "i_syn", "i_real", "set"]
    assert len(found) == 8 and set(found["set"]) == {"synthetic", "enhanced"}
    for _, row in found.iterrows():  # each set's image is paired with the real photo of its own stem
        stem = row["image"].split("/", 1)[1].removeprefix("x_")
        assert row["pair"] == f"real/{stem}" and table.index[row["i_real"]] == row["pair"]
    # a real image holds its first partner; its partner in each set is in partners()
    assert table.loc["real/coffee.png", "pair"] == "synthetic/coffee.png"
    after = features(store)
    for layer, old in before.items():  # nothing stored changed; the set's rows were appended
        np.testing.assert_array_equal(after[layer][:8], old)
        assert after[layer].shape[0] == 12 and np.isfinite(after[layer][8:]).all()
    # each command again, as it was run: nothing added, nothing duplicated
    assert (extract(real, syn, store, **KW).added, extract(real2, enh, store, **KW).added) == (0, 0)
    again = fs.image_table(store)
    assert again.equals(table)
    plain = xr.open_datatree(store, engine="zarr")
    assert list(map(str, plain["set"].values)) == list(table["set"])


def test_set_features_equal_a_store_of_that_set_alone(tmp_path, pair_dirs, fast_store):
    real, syn = pair_dirs
    enh = darker(syn, tmp_path / "renders")
    both = copy_store(fast_store, tmp_path)
    extract(real, enh, both, **KW, set_name="v2")
    alone = tmp_path / "alone.zarr"
    extract(real, enh, alone, **KW, set_name="v2")
    ta, tb = fs.image_table(alone), fs.image_table(both)
    ids = list(tb.index[tb["set"] == "v2"])
    assert [i.split("/", 1)[1] for i in ids] == [i.split("/", 1)[1] for i in ta.index[ta["set"] == "v2"]]
    for layer in FAST_LAYERS:
        a = fs.feature_layer(alone, layer).isel(image=np.flatnonzero(ta["set"] == "v2")).values
        b = fs.feature_layer(both, layer).sel(image=ids).values
        np.testing.assert_array_equal(a, b)
    # the first set of `alone` is v2, with ids synthetic/...: a later set may not be named synthetic
    with pytest.raises(ParameterError, match="'synthetic' is taken: the ids of this store's first set 'v2'"):
        extract(real, syn, alone, **KW, set_name="synthetic")
    assert fs.image_table(alone).equals(ta)


def legacy_copy(store, dest):
    """A copy of ``store`` as the code before sets wrote it: no ``set`` variable."""
    out = copy_store(store, dest)
    g = zarr.open_group(str(out), mode="r+", use_consolidated=False)
    del g["set"]
    consolidate(out)
    return out


def test_a_store_from_before_sets_reads_as_one_set_named_synthetic(tmp_path, pair_dirs, fast_store):
    old = legacy_copy(fast_store, tmp_path)
    assert "set" not in xr.open_datatree(old, engine="zarr").to_dataset()
    table = fs.image_table(old)
    assert list(table["set"]) == [""] * 4 + ["synthetic"] * 4
    assert fs.set_names(old) == ["synthetic"] and set(fs.partners(table)["set"]) == {"synthetic"}
    # the same command, with the synthetic folder under another name, resumes the legacy set
    real, syn = pair_dirs
    renamed = tmp_path / "renders"
    shutil.copytree(syn, renamed)
    messages = []
    res = extract(real, renamed, old, **KW, report=messages.append)
    assert (res.added, res.already_stored, res.set) == (0, 8, "synthetic")
    assert any("continuing set 'synthetic'" in m for m in messages)
    assert "set" not in zarr.open_group(str(old), mode="r", use_consolidated=False)  # nothing rewritten
    # a new set gives the store its set variable, the old rows in the legacy set
    res = extract(real, darker(syn, tmp_path / "enhanced"), old, **KW)
    assert (res.added, res.set) == (4, "enhanced")
    plain = xr.open_datatree(old, engine="zarr")
    assert list(map(str, plain["set"].values)) == [""] * 4 + ["synthetic"] * 4 + ["enhanced"] * 4
    assert fs.image_table(old).drop(columns="set").iloc[:8].equals(table.drop(columns="set"))


def test_bad_set_names_are_one_line_and_lose_nothing(tmp_path, pair_dirs, fast_store, capsys):
    real, syn = pair_dirs
    store = copy_store(fast_store, tmp_path)
    other = darker(syn, tmp_path / "other")
    extract(real, other, store, **KW, set_name="v2")
    table, feats = fs.image_table(store), features(store)
    common = ["extract", "--real", str(real), "--store", str(store), "--model", FAST_MODEL,
              "--layers", ",".join(FAST_LAYERS), "--weights", "random:0", "--quiet"]
    cases = [  # (--synthetic, --set or None, the CLI's line starts with)
        (other, "", "--set must not be empty"),
        (other, "a/b", "--set 'a/b' is not one folder name"),
        (other, "..", "--set '..' is not one folder name"),
        (other, "real", "--set 'real' cannot name a synthetic set"),
        # v2 holds the darker images: the original renders may not join it
        (syn, "v2", "--set 'v2' already names a set of 4 images, 4 of them from other files"),
        # without --set, "other" names its stored set; but a folder named like a stored set of other files
        (darker(other, tmp_path / "x" / "v2"), None, "--set 'v2' already names a set of 4 images"),
        (other, "synthetic", "--set 'synthetic' already names a set of 4 images, 4 of them from other files"),
    ]
    for folder, name, line in cases:
        argv = [*common, "--synthetic", str(folder), *(["--set", name] if name is not None else [])]
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"fakesegment: error: {line}"), err
    with pytest.raises(ParameterError) as exc:  # the library names its parameter
        extract(real, other, store, **KW, set_name="a/b")
    assert exc.value.param == "set_name" and "--" not in str(exc.value)
    # --set on a store made by another network: the identity check refuses it first
    argv = [*common, "--synthetic", str(other), "--set", "v9"]
    argv[argv.index("random:0")] = "random:1"
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "was made with another network" in err[0], err
    assert fs.image_table(store).equals(table)
    for layer, arr in features(store).items():
        np.testing.assert_array_equal(arr, feats[layer])
