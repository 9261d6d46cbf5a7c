"""``fakesegment report``: papermill runs ``report.ipynb`` (package data), nbconvert renders one HTML file.

The notebook is a thin client over :class:`fakesegment_nb.widgets.ReportContext`, which opens
the store (or records why it cannot) and hands out the header and the widgets. The HTML is
self-contained: figures are inline PNGs and no script is loaded from the network. ipywidgets
can only be rendered outside Jupyter by its HTML manager script from a CDN, so the widgets
appear as their static views (the same figures, in the same place); the executed notebook
written next to the HTML keeps the live widgets for JupyterLab.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Mapping

from .errors import FakesegmentError, ParameterError

__all__ = ["NOTEBOOK", "ReportResult", "notebook_parameters", "run_report", "write_html"]

NOTEBOOK = Path(str(files(__package__) / "report.ipynb"))  # package data: in a wheel too (pyproject.toml)

# the HTML template: nbconvert's lab template without the scripts it would fetch from a CDN
# (require.js, MathJax, mermaid, the ipywidgets HTML manager)
_TEMPLATE = """{%- extends 'lab/index.html.j2' -%}
{%- block html_head_js -%}{%- endblock html_head_js -%}
{%- block jupyter_widgets -%}{%- endblock jupyter_widgets -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
"""
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


@dataclass(frozen=True)
class ReportResult:
    """What :func:`run_report` wrote: the HTML file, the executed notebook beside it, the
    HTML's size in bytes and the seconds the run took."""

    html: Path
    notebook: Path
    size: int
    seconds: float


def notebook_parameters(notebook: str | Path = NOTEBOOK) -> dict:
    """``{name: default source}`` of the notebook's ``parameters``-tagged cell."""
    import papermill

    return {k: v["default"] for k, v in papermill.inspect_notebook(str(notebook)).items()}


def _store_arg(store) -> str:
    s = str(store)
    return s if "://" in s else str(Path(s).expanduser().resolve())


def run_report(store, out, parameters: Mapping[str, object] | None = None, *, progress: bool = True,
               notebook: str | Path = NOTEBOOK, kernel_name: str | None = None) -> ReportResult:
    """Execute ``report.ipynb`` on ``store`` and write a self-contained HTML report to ``out``.

    Parameters
    ----------
    store : store path or URL (a missing store still gives a report saying so).
    out : the HTML file; the executed notebook is written beside it as ``<out>.ipynb``.
    parameters : ``{name: value}`` for the notebook's parameters cell other than ``store``
        (title, layers, method, top_k, compare); values are handed to papermill as values,
        never executed.
    progress : papermill's progress bar on stderr.
    notebook, kernel_name : the notebook to run (default the packaged report) and its kernel.

    Returns
    -------
    ReportResult

    Raises
    ------
    ParameterError
        ``out`` not an .html file or not writable, ``parameters`` naming a parameter the
        notebook does not take (or ``store``), ``notebook`` missing.
    FakesegmentError
        A notebook cell failed (the HTML with the error is still written).
    """
    import papermill
    from traitlets.config import Config

    t0 = time.perf_counter()
    out = Path(out)
    if out.suffix.lower() not in (".html", ".htm"):
        raise ParameterError("out", f"must be an .html file, not {out}")
    notebook = Path(notebook)
    if not notebook.is_file():
        raise ParameterError("notebook", f"not found: {notebook}")
    params = {"store": _store_arg(store)}
    given = dict(parameters or {})
    if "store" in given:
        raise ParameterError("parameters", "cannot set store: the store is given on its own")
    known = notebook_parameters(notebook)
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise ParameterError("parameters", f"names an unknown report parameter {unknown[0]!r}; "
                                           f"{notebook.name} takes " + ", ".join(sorted(known)))
    params.update(given)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ParameterError("out", f"is in a folder that cannot be created ({out.parent}: {exc.strerror})") from None
    executed = out.with_suffix(".ipynb")
    failure = None
    # The kernel starts in the caller's folder, not the notebook's (inside the installed package,
    # whose modules would shadow top-level ones: `distributed`). IPC sockets, not TCP: the kernel
    # runs on this machine, and over TCP ipykernel warns that the transport is unencrypted.
    kernel_config = Config({"KernelManager": {"transport": "ipc"}})
    try:
        papermill.execute_notebook(str(notebook), str(executed), parameters=params, progress_bar=progress,
                                   kernel_name=kernel_name, config=kernel_config)
    except papermill.PapermillExecutionError as exc:
        failure = f"report notebook failed in cell {exc.exec_count}: {exc.ename}: {exc.evalue}"
    size = write_html(executed, out)
    if failure:
        raise FakesegmentError(f"{failure} (the HTML with the error is at {out})")
    return ReportResult(html=out, notebook=executed, size=size, seconds=time.perf_counter() - t0)


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
        raise ParameterError("out", f"cannot be written ({out}: {exc.strerror})") from None
    return len(body.encode("utf-8"))
