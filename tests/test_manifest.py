import numpy as np
import pytest
from PIL import Image

from fakesegment_nb.errors import FakesegmentError
from fakesegment_nb.manifest import build_manifest, scan_folder


def _img(path, value=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((4, 4, 3), value, np.uint8)).save(path)


def test_ids_are_domain_and_relative_path_recursive(tmp_path):
    _img(tmp_path / "r" / "a.png", 1)
    _img(tmp_path / "r" / "sub" / "b.jpg", 2)
    (tmp_path / "r" / "notes.txt").write_text("x")
    entries = scan_folder(tmp_path / "r", "real")
    assert [e.image for e in entries] == ["real/a.png", "real/sub/b.jpg"]
    assert [e.key for e in entries] == ["a", "sub/b"]
    assert all(len(e.sha256) == 64 for e in entries)
    assert scan_folder(tmp_path / "r", "real") == entries  # stable


def test_pairs_by_stem_across_extensions(tmp_path):
    _img(tmp_path / "r" / "a.jpg", 1)
    _img(tmp_path / "r" / "only_real.png", 2)
    _img(tmp_path / "s" / "a.png", 3)
    _img(tmp_path / "s" / "only_syn.png", 4)
    entries, notes = build_manifest(tmp_path / "r", tmp_path / "s")
    pairs = {e.image: e.pair for e in entries}
    assert pairs == {"real/a.jpg": "synthetic/a.png", "real/only_real.png": "",
                     "synthetic/a.png": "real/a.jpg", "synthetic/only_syn.png": ""}
    assert notes == []


def test_pairs_csv(tmp_path):
    _img(tmp_path / "r" / "photo1.png", 1)
    _img(tmp_path / "s" / "render_1.png", 2)
    csv = tmp_path / "pairs.csv"
    csv.write_text("synthetic,real\nrender_1.png,photo1.png\n")
    entries, _ = build_manifest(tmp_path / "r", tmp_path / "s", csv)
    assert {e.image: e.pair for e in entries}["synthetic/render_1.png"] == "real/photo1.png"


def test_pairs_csv_naming_missing_file_is_one_clear_error(tmp_path):
    _img(tmp_path / "r" / "photo1.png", 1)
    _img(tmp_path / "s" / "render_1.png", 2)
    csv = tmp_path / "pairs.csv"
    csv.write_text("synthetic,real\nrender_1.png,photo9.png\n")
    with pytest.raises(FakesegmentError, match=r"pairs.csv line 2: 'photo9.png' is not an image"):
        build_manifest(tmp_path / "r", tmp_path / "s", csv)
    csv.write_text("a,b\n1,2\n")
    with pytest.raises(FakesegmentError, match="columns synthetic,real"):
        build_manifest(tmp_path / "r", tmp_path / "s", csv)


def test_empty_missing_and_imageless_folders(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "txt").mkdir()
    (tmp_path / "txt" / "a.txt").write_text("x")
    with pytest.raises(FakesegmentError, match="does not exist"):
        scan_folder(tmp_path / "nope", "real")
    for d in ("empty", "txt"):
        with pytest.raises(FakesegmentError, match="holds no images"):
            scan_folder(tmp_path / d, "synthetic")


def test_duplicate_content_in_one_domain_is_skipped_with_a_note(tmp_path):
    _img(tmp_path / "r" / "a.png", 5)
    _img(tmp_path / "r" / "copy_of_a.png", 5)
    _img(tmp_path / "s" / "a.png", 5)  # same bytes in the other domain: kept
    entries, notes = build_manifest(tmp_path / "r", tmp_path / "s")
    assert [e.image for e in entries] == ["real/a.png", "synthetic/a.png"]
    assert notes == ["real/copy_of_a.png: same content as real/a.png, skipped"]
