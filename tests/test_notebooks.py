"""Every notebook runs top to bottom under papermill on the tiny store; its HTML has embedded
figures and no error output. ``fakesegment report`` end to end, with bad input."""

from __future__ import annotations

import re
from pathlib import Path

import dataclasses

import nbformat
import papermill as pm
import pytest

from fakesegment_nb.cli import main, parse_value, report_parameters
from fakesegment_nb.errors import ParameterError
from fakesegment_nb.report import NOTEBOOK, ReportResult, run_report, write_html
from fakesegment_nb.widgets import StoreView

from support import NOTEBOOKS, UNPAIRED, store_without_maps, tiny_store

FIGURE = "data:image/png;base64,"


def errors_of(nb) -> list[str]:
    return [f"{o.get('ename')}: {o.get('evalue')}" for c in nb.cells for o in c.get("outputs", [])
            if o.get("output_type") == "error"]


def run_notebook(name: str, tmp_path: Path, **parameters):
    out = tmp_path / name
    pm.execute_notebook(str(NOTEBOOKS / name), str(out), parameters=parameters, cwd=str(NOTEBOOKS),
                        progress_bar=False, kernel_name="python3")
    nb = nbformat.read(str(out), as_version=4)
    html_path = out.with_suffix(".html")
    write_html(out, html_path, exclude_input=False)
    return nb, html_path.read_text(encoding="utf-8")


def check_html(html: str, min_figures: int) -> None:
    assert html.count(FIGURE) >= min_figures
    assert "Traceback" not in html
    assert 'data-mime-type="application/vnd.jupyter.stderr"' not in html or "Error" not in html
    assert not re.search(r"<script[^>]+src=", html), "the HTML must not load scripts"
    assert "application/vnd.jupyter.widget-state+json" not in html


def test_parameters_cell_is_tagged():
    for path in [*sorted(NOTEBOOKS.glob("*.ipynb")), NOTEBOOK]:
        nb = nbformat.read(str(path), as_version=4)
        tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1, path.name
        assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), f"{path.name} has outputs"


def test_01_extract(tmp_path):
    store = tmp_path / "store.zarr"
    nb, html = run_notebook("01_extract.ipynb", tmp_path, probe_dir=str(tmp_path / "probe"), probe_n=2,
                            store=str(store), model="ssd300_vgg16", weights="random:0", batch_size=4)
    assert not errors_of(nb)
    assert (store / "zarr.json").is_file()
    assert "4 images added" in html
    assert "Untrained weights" in html and "conv4_3" in html
    check_html(html, min_figures=1)


def test_02_domain_statistics(tmp_path):
    nb, html = run_notebook("02_domain_statistics.ipynb", tmp_path, store=str(tiny_store()),
                            out_dir=str(tmp_path / "csv"))
    assert not errors_of(nb)
    assert {p.name for p in (tmp_path / "csv").iterdir()} == {"layers.csv", "channels.csv", "images.csv", "pairs.csv"}
    assert "Per-layer distance" in html and "Effect size" in html
    check_html(html, min_figures=3)


def test_03_unrealistic_details(tmp_path):
    nb, html = run_notebook("03_unrealistic_details.ipynb", tmp_path, store=str(tiny_store()), top_k=3)
    assert not errors_of(nb)
    assert "Gallery" in html and "Explorer" in html and "Layers driving the" in html
    # both maps per image, titled by their questions (the static views: alt texts and the drivers)
    assert "looks rendered here" in html and "unusual details here" in html
    check_html(html, min_figures=2)


def test_03_makes_maps_when_missing(tmp_path):
    store = store_without_maps(tmp_path)
    nb, html = run_notebook("03_unrealistic_details.ipynb", tmp_path, store=str(store), method="reference", top_k=2)
    assert not errors_of(nb)
    assert (store / "maps" / "reference").is_dir()
    check_html(html, min_figures=2)


EVIL = "Q'\"); open('PWNED', 'w').write('x') #{{ }} <b>bold</b>"


def test_report_cli(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out" / "report.html"
    rc = main(["report", "--store", str(tiny_store()), "--out", str(out), "-p", "title", EVIL,
               "-p", "top_k", "2", "-p", "method", "reference", "--quiet"])
    assert rc == 0
    assert not list(tmp_path.rglob("PWNED")) and not (NOTEBOOKS / "PWNED").exists()
    html = out.read_text(encoding="utf-8")
    nb = nbformat.read(str(out.with_suffix(".ipynb")), as_version=4)
    assert not errors_of(nb)
    # the header: title passed as a value (escaped, not executed), store, model, weights, date, parameters
    assert "<h1>Q'\"); open('PWNED', 'w').write('x') #{{ }} &lt;b&gt;bold&lt;/b&gt;</h1>" in html
    assert "<b>bold</b>" not in html
    for text in (str(tiny_store()), "ssd300_vgg16", "random:0", "created", "\"top_k\": 2",
                 "Untrained weights"):
        assert text in html, text
    assert "Missing from this report" not in html
    check_html(html, min_figures=5)  # bars, violin, heat map, gallery, explorer
    # the reference maps rank every synthetic image, the unpaired one too; the largest mask is shown
    ranked = StoreView(tiny_store()).map_summary("reference").sort_values("area", ascending=False)
    assert UNPAIRED in ranked.index and ranked["area"].iloc[0] > ranked["area"].iloc[1]
    assert ranked.index[0] in html
    # the map section, titled by the questions the maps answer, with a legend of every stored map
    assert "Where do the images look rendered, and which details are unusual?" in html
    for text in ("<b>Looks rendered here</b> (<code>domain</code>)", "<b>Unusual details here</b> (<code>reference</code>)",
                 "<b>Differs from its real twin here</b> (<code>paired</code>)", "mask at 5% false positives"):
        assert text in html, text
    assert "report written" in capsys.readouterr().out


def test_report_on_missing_store_says_so(tmp_path):
    out = tmp_path / "r.html"
    assert main(["report", "--store", str(tmp_path / "nope.zarr"), "--out", str(out), "--quiet"]) == 0
    html = out.read_text(encoding="utf-8")
    assert "Missing from this report" in html and "the store could not be opened" in html
    assert "not shown: the store could not be opened" in html
    assert not errors_of(nbformat.read(str(out.with_suffix(".ipynb")), as_version=4))


def test_report_on_store_without_maps(tmp_path):
    out = tmp_path / "r.html"
    assert main(["report", "--store", str(store_without_maps(tmp_path)), "--out", str(out), "--quiet"]) == 0
    html = out.read_text(encoding="utf-8")
    assert "unrealistic-detail maps: the store has none" in html
    assert "no unrealistic-detail maps in this store" in html  # the gallery and explorer panels
    check_html(html, min_figures=4)  # the statistics still render, and the explorer


def test_report_bad_input_is_one_line(tmp_path, capsys):
    assert main(["report", "--store", str(tiny_store()), "--out", str(tmp_path / "r.html"),
                 "-p", "nosuch", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "unknown report parameter 'nosuch'" in err and "top_k" in err
    assert main(["report", "--store", str(tiny_store()), "--out", str(tmp_path / "r.txt")]) == 2
    assert "must be an .html file" in capsys.readouterr().err


def test_run_report_returns_what_it_wrote(tmp_path):
    res = run_report(tmp_path / "nope.zarr", tmp_path / "r.html", {"top_k": 2}, progress=False)
    assert isinstance(res, ReportResult) and res.html == tmp_path / "r.html"
    assert res.size == res.html.stat().st_size > 0 and res.notebook == tmp_path / "r.ipynb"
    assert nbformat.read(str(res.notebook), as_version=4).cells and res.seconds > 0
    with pytest.raises(dataclasses.FrozenInstanceError):
        res.size = 0


def test_report_errors_name_parameters_in_the_library_and_flags_in_the_cli(tmp_path, capsys):
    store = tmp_path / "nope.zarr"
    with pytest.raises(ParameterError, match="must be an .html file") as exc:
        run_report(store, tmp_path / "r.txt")
    assert exc.value.param == "out" and "--out" not in str(exc.value)
    with pytest.raises(ParameterError, match="unknown report parameter 'nosuch'") as exc:
        run_report(store, tmp_path / "r.html", {"nosuch": 1, "top_k": 2})
    assert exc.value.param == "parameters" and "-p" not in str(exc.value)
    with pytest.raises(ParameterError, match="cannot set store") as exc:
        run_report(store, tmp_path / "r.html", {"store": "elsewhere.zarr"})
    assert not (tmp_path / "r.html").exists()  # refused before anything ran
    assert main(["report", "--store", str(store), "--out", str(tmp_path / "r.html"), "-p", "store", "x"]) == 2
    assert capsys.readouterr().err.startswith("fakesegment: error: -p cannot set store")
    assert main(["report", "--store", str(store), "--out", str(tmp_path / "r.txt")]) == 2
    assert capsys.readouterr().err.startswith("fakesegment: error: --out must be an .html file")


def test_report_parameters_are_parsed_in_the_cli():
    assert report_parameters([("top_k", "3"), ("title", "a b"), ("top_k", "4")]) == {"top_k": 4, "title": "a b"}
    assert report_parameters(None) == {}


def test_parse_value_never_evaluates():
    assert parse_value("3") == 3 and parse_value("0.5") == 0.5
    assert parse_value("None") is None and parse_value("true") is True
    code = "__import__('os').system('echo hi')"
    assert parse_value(code) == code
    assert parse_value("[1, 2]") == "[1, 2]"
