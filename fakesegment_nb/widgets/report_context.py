"""``ReportContext``: what ``report.ipynb`` shows, built from the notebook's parameters.

The report notebook is a thin client: it makes one ``ReportContext`` and displays its header
and sections. The context opens the store (or records why it cannot), and every section it
cannot fill says plainly what is missing instead of failing.
"""

from __future__ import annotations

import datetime as _dt
import html
import json
import warnings

from ..errors import FakesegmentError
from .dashboard import DomainDashboard
from .explorer import Explorer
from .gallery import Gallery
from .markup import banner_html, note_html, store_label
from .plots import gap_profile_figure
from .mappanels import MAP_METHODS_EXPLAINED, map_question, picture
from .render import EDGE, Panel, figure_html, panels_figure
from .storeview import StoreView, layer_list

__all__ = ["ReportContext"]


class ReportContext:
    """What ``report.ipynb`` shows, built from its parameters; never raises for missing parts.

    Parameters
    ----------
    store : store path or URL.
    layers : layer names (list or comma-separated string; None = all).
    method : the map that ranks the gallery and that the explorer's region and drivers follow
        (None = the store's first: ``domain``, ``reference``, ``paired`` in that order); every
        map of the store is shown.
    top_k : images in the gallery.
    title : report title.
    parameters : everything the notebook was given, for the header.
    compare : other stores (list or comma-separated paths) whose gap profiles are drawn beside
        this one's (cross-architecture); one that cannot be read gets a note, not a failure.
    """

    def __init__(self, store, layers=None, method=None, top_k: int = 8, title: str = "fakesegment report",
                 parameters: dict | None = None, compare=None):
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

        a = self.view.attrs if self.view is not None else {}
        rows = [("store", self.store), ("model", a.get("model", "n/a")), ("weights", a.get("weights", "n/a")),
                ("created", self.created)]
        if self.view is not None:
            rows.append(("images", " / ".join(f"{len(self.view.images(d))} {d}" for d in self.view.domains)))
            rows.append(("synthetic sets", ", ".join(f"{s} ({len(self.view.set_images(s))} images)"
                                                     for s in self.view.sets) or "none"))
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

        return HTML(note_html(f"not shown: {self.missing[0]}"))

    def dashboard(self):
        """The DomainDashboard (it says itself what it cannot show)."""
        return self._no_store() if self.view is None else DomainDashboard(self.view)

    def gap_profile(self):
        """This store's gap profile and the ``compare`` stores' on the same axes (via
        :func:`fakesegment_nb.stats.compare_stores`), one line per (store, synthetic set): stores
        named by their path stem (:func:`~fakesegment_nb.stats.store_names`), a store's sets by
        their names, an untrained store's lines also "smoke test"; each line's table is headed by
        its network ("model (weights, trained or not)"). A note says what the stores share (the
        same real images, by sha256, or how many, or none). With compare stores, a sentence
        computed by :func:`fakesegment_nb.agreement.network_agreement` says whether the trained
        networks agree (per-image ranking, where the gap peaks). A compare store that cannot be
        read is named in a note below the figure."""
        from IPython.display import HTML

        from ..stats import compare_stores, store_names

        if self.view is None:
            return self._no_store()
        why = self.view.stats_missing()
        if why:
            return HTML(note_html(f"gap profile unavailable: {why}"))
        notes, stores, views = [], [self.view.source], [self.view]
        for other in self.compare:
            try:
                v = StoreView(other)
                if v.stats_missing():
                    raise FakesegmentError(v.stats_missing())
            except Exception as exc:  # noqa: BLE001 -- any unreadable store: a note, not a failure
                notes.append(f"compare store {other} not shown: {exc}")
                continue
            stores.append(v.source)
            views.append(v)
        names = store_names([self.store, *[str(v.source) for v in views[1:]]])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # the note below says it
            try:
                table = compare_stores(stores, labels=names)
            except FakesegmentError as exc:
                return HTML(note_html(f"gap profile unavailable: {exc}"))
        network = {n: store_label(v.attrs) for n, v in zip(names, views)}
        keep = set(self.view.layers)
        profiles, heads = {}, {}
        for line in table.attrs["lines"]:
            df = table[line["line"]].dropna(subset=["layer"])
            label = line["line"] + (": smoke test" if len(stores) > 1 and not line["weights_trained"] else "")
            profiles[label] = df[df["layer"].isin(keep)] if line["store"] == names[0] else df
            heads[label] = f"{label} -- " + ", ".join(_unnamed(line, len(stores)) + [network[line["store"]]])
        cols = ["layer", "c2st_auroc", "c2st_lo", "c2st_hi", "c2st_p", "fid_ratio", "fid", "fid_lo", "fid_hi",
                "fid_floor"]
        tables = "".join(f"<p><b>{html.escape(heads[lab])}</b></p>"
                         + df[cols].to_html(index=False, float_format=lambda x: f"{x:.3g}")
                         for lab, df in profiles.items())
        share = (f"<p><b>What the stores share.</b> {html.escape(table.attrs['note'])}</p>"
                 if len(stores) > 1 or len(self.view.sets) > 1 else "")
        agree = self._agreement(stores, notes) if len(stores) > 1 else ""
        return HTML(agree + share + figure_html(gap_profile_figure(profiles), "gap profile")
                    + "".join(note_html(n) for n in notes) + tables)

    @staticmethod
    def _agreement(stores, notes: list[str]) -> str:
        """The across-networks sentence and its figures as HTML ("" with a note if they cannot be had)."""
        from ..agreement import network_agreement

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ag = network_agreement(stores)
        except FakesegmentError as exc:
            notes.append(f"whether the networks agree is not shown: {exc}")
            return ""
        rows = "".join(f"<tr><td>{html.escape(r.a)}</td><td>{html.escape(r.b)}</td><td>{r.rho:.2f}</td>"
                       f"<td>{r.p:.2g}</td><td>{r.n}</td></tr>" for r in ag.images.itertuples())
        table = ("<table><tr><th>network</th><th>network</th><th>Spearman's rho (per-image scores)</th>"
                 f"<th>p</th><th>images</th></tr>{rows}</table>") if rows else ""
        return f"<p><b>Across networks.</b> {html.escape(ag.sentence)}</p>" + table

    def least_realistic(self, layer: str = "fused"):
        """Per synthetic set, the ``top_k`` images with the highest realism score
        (``images.csv``, ``layer`` = fused by default; ranked within the set), as thumbnails with
        their score and rank, each figure named by its set."""
        from IPython.display import HTML

        if self.view is None:
            return self._no_store()
        tables, why = self.view.stats()
        if tables is None:
            return HTML(note_html(f"realism scores unavailable: {why}"))
        rows = tables.images[tables.images["layer"] == layer].dropna(subset=["score"])
        out = []
        for name in self.view.sets:
            t = rows[rows["set"] == name].head(self.top_k)
            in_set = f" of set {name}" if len(self.view.sets) > 1 else ""
            if t.empty:
                out.append(note_html(f"no finite realism score{in_set} for layer {layer} (see the gap profile's notes)"))
                continue
            panels = []
            for r in t.itertuples():
                h, w = self.view.original_size(r.image)
                panels.append(Panel(f"#{r.rank} {r.image}\nscore {r.score:.3g}", picture(self.view, r.image),
                                    xlabel="x (image px)", ylabel="y (image px)", extent=(0, w, h, 0)))
            fig = panels_figure(panels, ncols=min(4, len(panels)), size=3.0,
                                suptitle=f"Least realistic synthetic images{in_set} ({layer} score: distance to the "
                                         "real images' distribution, 1 = a typical real image)")
            head = f"<h4>Set {html.escape(name)}</h4>" if len(self.view.sets) > 1 else ""
            out.append(head + figure_html(fig, f"least realistic images{in_set}")
                       + t.to_html(index=False, float_format=lambda x: f"{x:.3g}"))
        return HTML("".join(out) if out else note_html("no synthetic set in this store"))

    def map_legend(self):
        """What each map of the store answers and how it is drawn, as HTML (the report's map
        section opens with it)."""
        from IPython.display import HTML

        if self.view is None:
            return self._no_store()
        methods = self.view.methods()
        if not methods:
            return HTML(note_html("no unrealistic-detail maps in this store: run `fakesegment maps --store ...`"))
        edge = "rgb({},{},{})".format(*EDGE)

        def fpr(m):
            try:
                return f"; mask at {100 * float(self.view.tree['maps'][m].attrs['fpr']):g}% false positives on real images"
            except (KeyError, TypeError, ValueError):
                return ""

        items = "".join(f"<li><b>{html.escape(map_question(m).capitalize())}</b> (<code>{html.escape(m)}</code>): "
                        f"{html.escape(MAP_METHODS_EXPLAINED.get(m, 'a map stored in maps/' + m) + fpr(m))}</li>"
                        for m in methods)
        return HTML("<p>Each image is shown at its own aspect ratio with every map of the store over it:</p>"
                    f"<ul>{items}</ul><p>Heat: the map's score (its colour bar spans the image's 1st to 99th "
                    f"percentile); <span style='color:{edge};background:#333;padding:0 3px'>outline</span>: the "
                    "mask, where the score is above the threshold calibrated on real images. The percentage with "
                    "each map is the share of the image inside its mask.</p>")

    def gallery(self, set_name: str | None = None):
        """The Gallery of the ``top_k`` synthetic images of ``method``'s maps (of ``set_name``;
        None: every set's)."""
        return (self._no_store() if self.view is None
                else Gallery(self.view, method=self.method, k=self.top_k, set_name=set_name))

    def galleries(self) -> list:
        """One Gallery per synthetic set, each named by its set (one Gallery on a store of one set)."""
        if self.view is None or len(self.view.sets) < 2:
            return [self.gallery()]
        return [self.gallery(s) for s in self.view.sets]

    def explorer(self):
        """An Explorer on the gallery's top image (or the first synthetic image)."""
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


def _unnamed(line: dict, n_stores: int) -> list[str]:
    """What a profile's label does not already say: its store (only where several are compared) and
    its set (labels are a set, a store, or ``store · set``: :func:`fakesegment_nb.stats.line_labels`)."""
    name, store, set_name = line["line"], line["store"], line["set"]
    says_store = n_stores == 1 or name == store or name.startswith(f"{store} · ")
    says_set = name == set_name or name.endswith(f" · {set_name}")
    return ([] if says_store else [f"store {store}"]) + ([] if says_set else [f"set {set_name}"])
