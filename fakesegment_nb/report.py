"""``fakesegment report``: papermill runs ``notebooks/report.ipynb``, nbconvert renders one HTML file.

The notebook is a thin client over :class:`ReportContext`, which opens the store (or records
why it cannot), and hands out the header and the widgets; every section it cannot fill says
plainly what is missing instead of failing. The HTML is self-contained: figures are inline
PNGs and no script is loaded from the network. ipywidgets can only be rendered outside
Jupyter by its HTML manager script from a CDN, so the widgets appear as their static views
(the same figures, in the same place); the executed notebook written next to the HTML keeps
the live widgets for JupyterLab.
"""

from __future__ import annotations

import datetime as _dt
import html
import json
import time
from pathlib import Path
from typing import Iterable, Sequence

from .errors import FakesegmentError

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "report.ipynb"

# the HTML template: nbconvert's lab template without the scripts it would fetch from a CDN
# (require.js, MathJax, mermaid, the ipywidgets HTML manager)
_TEMPLATE = """{%- extends 'lab/index.html.j2' -%}
{%- block html_head_js -%}{%- endblock html_head_js -%}
{%- block jupyter_widgets -%}{%- endblock jupyter_widgets -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
"""
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


# --------------------------------------------------------------------------------------------
# parameters


def parse_value(text: str):
    """A ``-p NAME VALUE`` string as a value: int, float, true/false, none, else the string itself.

    Nothing is evaluated: ``"__import__('os')"`` stays that string.
    """
    low = text.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def notebook_parameters(notebook: str | Path = NOTEBOOK) -> dict:
    """``{name: default source}`` of the notebook's ``parameters``-tagged cell."""
    import papermill

    return {k: v["default"] for k, v in papermill.inspect_notebook(str(notebook)).items()}


def report_parameters(store: str, pairs: Iterable[Sequence[str]] = (), notebook: str | Path = NOTEBOOK) -> dict:
    """The parameters handed to papermill: ``store`` plus each ``-p NAME VALUE``, checked by name."""
    known = notebook_parameters(notebook)
    params = {"store": _store_arg(store)}
    for name, value in pairs:
        if name not in known:
            raise FakesegmentError(f"unknown report parameter {name!r}; report.ipynb takes "
                                   + ", ".join(sorted(known)))
        if name == "store":
            raise FakesegmentError("give the store with --store, not -p store")
        params[name] = parse_value(value)
    return params


def _store_arg(store) -> str:
    s = str(store)
    return s if "://" in s else str(Path(s).expanduser().resolve())


# --------------------------------------------------------------------------------------------
# running


def run_report(store, out, parameters: Iterable[Sequence[str]] = (), progress: bool = True,
               notebook: str | Path = NOTEBOOK, kernel_name: str | None = None) -> dict:
    """Execute ``report.ipynb`` on ``store`` and write a self-contained HTML report to ``out``.

    Parameters
    ----------
    store : store path or URL (a missing store still gives a report saying so).
    out : the HTML file; the executed notebook is written beside it as ``<out>.ipynb``.
    parameters : ``(name, value)`` string pairs, as from ``-p NAME VALUE``; values are passed
        as values (see :func:`parse_value`), never executed.
    progress : papermill's progress bar on stderr.

    Returns
    -------
    dict with ``html`` and ``notebook`` paths, ``bytes`` (HTML size) and ``seconds``.

    Raises
    ------
    FakesegmentError
        Unknown parameter, unwritable output, or a notebook cell that failed (the HTML with
        the error is still written).
    """
    import papermill

    t0 = time.perf_counter()
    out = Path(out)
    if out.suffix.lower() not in (".html", ".htm"):
        raise FakesegmentError(f"--out must be an .html file, not {out}")
    notebook = Path(notebook)
    if not notebook.is_file():
        raise FakesegmentError(f"report notebook not found: {notebook}")
    params = report_parameters(store, parameters, notebook)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FakesegmentError(f"cannot create the folder for {out}: {exc.strerror}") from None
    executed = out.with_suffix(".ipynb")
    failure = None
    try:
        papermill.execute_notebook(str(notebook), str(executed), parameters=params, progress_bar=progress,
                                   kernel_name=kernel_name, cwd=str(notebook.parent))
    except papermill.PapermillExecutionError as exc:
        failure = f"report notebook failed in cell {exc.exec_count}: {exc.ename}: {exc.evalue}"
    size = write_html(executed, out)
    if failure:
        raise FakesegmentError(f"{failure} (the HTML with the error is at {out})")
    return {"html": out, "notebook": executed, "bytes": size, "seconds": time.perf_counter() - t0}


def write_html(notebook: str | Path, out: str | Path, exclude_input: bool = True) -> int:
    """Render an executed notebook to self-contained HTML; returns its size in bytes.

    Widget outputs are shown by their static view (``text/html`` / ``image/png`` in the same
    output), widgets without one (progress bars) are left out; widget state is dropped since
    rendering it needs a script from the network.
    """
    import jinja2
    import nbformat
    from nbconvert import HTMLExporter

    nb = nbformat.read(str(notebook), as_version=4)
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        outputs = []
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if WIDGET_VIEW in data:
                del data[WIDGET_VIEW]
                if not set(data) - {"text/plain"}:
                    continue  # a widget without a static view (a progress bar): nothing to show
            outputs.append(output)
        if cell.cell_type == "code":
            cell.outputs = outputs
    exporter = HTMLExporter(template_name="lab", extra_loaders=[jinja2.DictLoader({"report.html.j2": _TEMPLATE})],
                            template_file="report.html.j2", exclude_input=exclude_input,
                            exclude_input_prompt=True, exclude_output_prompt=True, embed_images=True)
    body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": Path(out).stem}})
    try:
        Path(out).write_text(body, encoding="utf-8")
    except OSError as exc:
        raise FakesegmentError(f"cannot write {out}: {exc.strerror}") from None
    return len(body.encode("utf-8"))


# --------------------------------------------------------------------------------------------
# what the notebook calls


class ReportContext:
    """What ``report.ipynb`` shows, built from its parameters; never raises for missing parts.

    Parameters
    ----------
    store : store path or URL.
    layers : layer names (list or comma-separated string; None = all).
    method : map method for the gallery and explorer (None = the store's first).
    top_k : images in the gallery.
    title : report title.
    parameters : everything the notebook was given, for the header.
    compare : other stores (list or comma-separated paths) whose gap profiles are drawn beside
        this one's (cross-architecture); one that cannot be read gets a note, not a failure.
    """

    def __init__(self, store, layers=None, method=None, top_k: int = 8, title: str = "fakesegment report",
                 parameters: dict | None = None, compare=None):
        from .widgets import StoreView

        self.store, self.method, self.title = str(store), method, str(title)
        self.compare = layer_list(compare) or []
        self.top_k = max(1, int(top_k))
        self.parameters = dict(parameters or {})
        self.created = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        self.missing: list[str] = []
        self.view = None
        try:
            self.view = StoreView(store, layers=layer_list(layers))
        except FakesegmentError as exc:
            self.missing.append(f"the store could not be opened: {exc}")
            return
        v = self.view
        if not v.two_domains:
            self.missing.append(f"domain statistics: {v.missing_domain()}")
        if not v.methods():
            self.missing.append("unrealistic-detail maps: the store has none (run `fakesegment maps --store "
                                f"{self.store}`)")
        elif method is not None and method not in v.methods():
            self.missing.append(f"maps of method {method!r}: the store has {', '.join(v.methods())}")
            self.method = None
        if v.partner_count() == 0:
            self.missing.append("pair tables: no synthetic image has a stored real pair")

    def header(self):
        """Title, store, model, weights, date and parameters, the untrained-weights banner, and
        a list of what is missing."""
        from IPython.display import HTML

        from .widgets import banner_html

        a = self.view.attrs if self.view is not None else {}
        rows = [("store", self.store), ("model", a.get("model", "n/a")), ("weights", a.get("weights", "n/a")),
                ("created", self.created)]
        if self.view is not None:
            rows.append(("images", " / ".join(f"{len(self.view.images(d))} {d}" for d in self.view.domains)))
            rows.append(("layers", ", ".join(self.view.layers)))
        params = json.dumps(self.parameters, default=str)
        rows.append(("parameters", params))
        table = "".join(f"<tr><th style='text-align:left;padding-right:12px'>{html.escape(k)}</th>"
                        f"<td style='text-align:left'><code>{html.escape(str(v))}</code></td></tr>" for k, v in rows)
        missing = ""
        if self.missing:
            missing = ("<div style='border:1px solid #c33;background:#fdecea;padding:6px 10px;margin:6px 0'>"
                       "<b>Missing from this report:</b><ul style='margin:4px 0'>"
                       + "".join(f"<li>{html.escape(m)}</li>" for m in self.missing) + "</ul></div>")
        return HTML(f"<h1>{html.escape(self.title)}</h1><table>{table}</table>"
                    + (banner_html(a) if self.view is not None else "") + missing)

    def _no_store(self):
        from IPython.display import HTML

        from .widgets.markup import note_html

        return HTML(note_html(f"not shown: {self.missing[0]}"))

    def dashboard(self):
        """The DomainDashboard (it says itself what it cannot show)."""
        from .widgets import DomainDashboard

        return self._no_store() if self.view is None else DomainDashboard(self.view)

    def gap_profile(self):
        """This store's gap profile and the ``compare`` stores' on the same axes (via
        :func:`fakesegment_nb.stats.compare_stores`), each labelled "model (weights, trained or
        not)"; a compare store that cannot be read is named in a note below the figure."""
        from IPython.display import HTML

        from .widgets.render import figure_html
        from .widgets.markup import note_html
        from .widgets.plots import gap_profile_figure

        if self.view is None:
            return self._no_store()
        why = self.view.stats_missing()
        if why:
            return HTML(note_html(f"gap profile unavailable: {why}"))
        from .stats import compare_stores

        notes, stores, labels = [], [self.view.source], [_store_label(self.view.attrs)]
        for other in self.compare:
            try:
                from .widgets import StoreView

                v = StoreView(other)
                if v.stats_missing():
                    raise FakesegmentError(v.stats_missing())
            except Exception as exc:  # noqa: BLE001 -- any unreadable store: a note, not a failure
                notes.append(f"compare store {other} not shown: {exc}")
                continue
            stores.append(v.source)
            labels.append(_store_label(v.attrs))
        labels = [f"{l} #{labels[:i + 1].count(l)}" if labels.count(l) > 1 else l for i, l in enumerate(labels)]
        import warnings

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                table = compare_stores(stores, labels=labels)
            except FakesegmentError as exc:
                return HTML(note_html(f"gap profile unavailable: {exc}"))
        notes += [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
        keep = set(self.view.layers)
        profiles = {}
        for i, lab in enumerate(labels):
            df = table[lab].dropna(subset=["layer"])
            profiles[lab] = df[df["layer"].isin(keep)] if i == 0 else df
        cols = ["layer", "c2st_auroc", "c2st_lo", "c2st_hi", "c2st_p", "fid_ratio", "fid", "fid_lo", "fid_hi",
                "fid_floor"]
        tables = "".join(f"<p><b>{html.escape(lab)}</b></p>" + df[cols].to_html(index=False, float_format=lambda x: f"{x:.3g}")
                         for lab, df in profiles.items())
        return HTML(figure_html(gap_profile_figure(profiles), "gap profile")
                    + "".join(note_html(n) for n in notes) + tables)

    def least_realistic(self, layer: str = "fused"):
        """The ``top_k`` synthetic images with the highest realism score (``images.csv``,
        ``layer`` = fused by default), as thumbnails with their score and rank."""
        from IPython.display import HTML

        from .widgets.render import Panel, figure_html, note_rgb, panels_figure
        from .widgets.markup import note_html

        if self.view is None:
            return self._no_store()
        tables, why = self.view.stats()
        if tables is None:
            return HTML(note_html(f"realism scores unavailable: {why}"))
        t = tables.images[tables.images["layer"] == layer].dropna(subset=["score"]).head(self.top_k)
        if t.empty:
            return HTML(note_html(f"no finite realism score for layer {layer} (see the gap profile's notes)"))
        panels = []
        for r in t.itertuples():
            rgb = self.view.rgb(r.image)
            panels.append(Panel(f"#{r.rank} {r.image}\nscore {r.score:.3g}",
                                note_rgb(self.view.input_size) if rgb is None else rgb))
        fig = panels_figure(panels, ncols=min(4, len(panels)), size=3.0,
                            suptitle=f"Least realistic synthetic images ({layer} score: distance to the real "
                                     "images' distribution, 1 = a typical real image)")
        return HTML(figure_html(fig, "least realistic images")
                    + t.to_html(index=False, float_format=lambda x: f"{x:.3g}"))

    def gallery(self):
        from .widgets import Gallery

        return self._no_store() if self.view is None else Gallery(self.view, method=self.method, k=self.top_k)

    def explorer(self):
        """An Explorer on the gallery's top image (or the first synthetic image)."""
        from .widgets import Explorer

        if self.view is None:
            return self._no_store()
        image = None
        if self.view.methods():
            method = self.method or self.view.methods()[0]
            ranking = self.view.map_summary(method)
            if len(ranking):
                image = ranking.sort_values("max", ascending=False).index[0]
        ex = Explorer(self.view, image=image, method=self.method)
        if self.view.methods() and image is not None:
            ex.select_top_region()
        return ex


def _store_label(attrs: dict) -> str:
    trained = "trained" if attrs.get("weights_trained") else "untrained"
    return f"{attrs.get('model', '?')} ({attrs.get('weights', '?')}, {trained})"


def layer_list(layers):
    """``layers`` parameter (None, list, or comma-separated string) as a list or None."""
    if layers is None or layers == "":
        return None
    if isinstance(layers, str):
        return [l.strip() for l in layers.split(",") if l.strip()]
    return [str(l) for l in layers]
