"""Synthetic sets in one store: their names, their image ids, and how a run's images meet the
images already stored (the ``set`` variable of DESIGN.md section 3).

A store holds its real images once and any number of named synthetic sets (renderer versions,
an enhancer's output), each compared with all the real images. ``fakesegment extract --set NAME``
adds or continues the set NAME; without ``--set``, a run continues the stored set that holds
this synthetic folder's images (so that rerunning a command resumes it, on stores from before
sets too, whose synthetic images read as one set named ``synthetic``), else the set is named
after the synthetic folder.

**Ids.** A real image is ``real/<path relative to its folder>``. The store's *first* synthetic
set keeps ``synthetic/<relative path>`` whatever its name: what every store held before sets, so
that a store of one set has the ids it always had. Every later set is ``<set>/<relative path>``.
Ids stay unique across sets because a set name is one path component and may not be ``real``
(the real images' ids) nor, for a later set, ``synthetic`` (the first set's ids); a run that
would still store an id held by another set is refused.

**Names.** A set name is one folder name: not empty, no path separator, not ``.`` or ``..``.
A name that is already the name of a set made from other files is refused (the stored images
of a set must lie in this run's synthetic folder, or have their content there: a moved folder
continues its set, another folder does not silently join it); adding files to the set's folder
and running again appends them, as a rerun always has.

**Real images** already stored (same sha256) are not extracted again, whatever folder they are
in now: they keep their stored id, and this run's pairs point to it. Pairs are found within the
run's set (same stem, or ``--pairs``). A synthetic image's ``pair`` is its real partner; a real
image's ``pair`` holds one partner: the one it has, while that image is still paired with it,
else the first synthetic image in store order paired with it. Its partner in each set is in
:func:`fakesegment_nb.store.partners`, which has the ``set`` column.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pandas as pd

from .errors import ParameterError
from .manifest import Entry

__all__ = ["check_set_name", "choose_set", "place_set", "real_pairs", "FIRST_SET_PREFIX", "REAL_PREFIX"]

REAL_PREFIX = "real"
FIRST_SET_PREFIX = "synthetic"  # the id prefix of a store's first synthetic set
PARAM = "set_name"  # extract's parameter (the CLI's --set)


def check_set_name(name: str) -> str:
    """``name`` if it can name a set, else :class:`ParameterError` saying why."""
    if not isinstance(name, str) or not name.strip():
        raise ParameterError(PARAM, "must not be empty; a set name is one folder name, e.g. enhanced")
    seps = {"/", "\\", os.sep, *([os.altsep] if os.altsep else [])}
    if any(s in name for s in seps) or name in (".", ".."):
        raise ParameterError(PARAM, f"{name!r} is not one folder name (it holds a path separator or is . or ..); "
                                    "a set name is one folder name, e.g. enhanced")
    if any(ord(c) < 32 for c in name):
        raise ParameterError(PARAM, f"{name!r} holds a control character")
    if name == REAL_PREFIX:
        raise ParameterError(PARAM, f"{name!r} cannot name a synthetic set: the real images' ids start with real/")
    return name


def _belongs(rows: pd.DataFrame, folder: Path, shas: set[str]) -> pd.Series:
    """Whether each stored row lies under ``folder`` or has its content among ``shas``."""
    under = rows["path"].map(lambda p: Path(p).is_relative_to(folder))
    return under | rows["sha256"].isin(shas)


def choose_set(stored: pd.DataFrame, synthetic: list[Entry], folder, name: str | None = None
               ) -> tuple[str, str, list[str]]:
    """The set this run adds to, its id prefix, and notes for the user.

    Parameters
    ----------
    stored : the committed rows (:meth:`fakesegment_nb.writer.StoreWriter.stored`; empty for a
        new store), with columns ``image, domain, set, sha256, path``.
    synthetic : this run's synthetic entries (from :func:`fakesegment_nb.manifest.build_manifest`).
    folder : the synthetic folder.
    name : the set's name (``--set``); None: continue the stored set that holds this folder's
        images, else the folder's name.
    """
    folder = Path(folder).resolve()
    shas = {e.sha256 for e in synthetic}
    syn = stored[stored["domain"] == "synthetic"]
    order = list(pd.unique(syn["set"].to_numpy()))
    belongs = _belongs(syn, folder, shas) if len(syn) else pd.Series([], dtype=bool)
    notes: list[str] = []
    if name is None:
        own = [s for s in order if belongs[syn["set"] == s].all()]
        if folder.name in own or not own:
            name = folder.name
            try:
                check_set_name(name)
            except ParameterError as exc:
                raise ParameterError(PARAM, f"is needed: the synthetic folder's name cannot name a set ({exc.message})") \
                    from None
        elif len(own) == 1:
            name = own[0]
            notes.append(f"continuing set {name!r}: it holds this folder's images (name another set with --set)")
        else:
            raise ParameterError(PARAM, "is needed: this folder's images are stored as the sets "
                                        + ", ".join(map(repr, own)))
    else:
        check_set_name(name)
    if name in order:
        mine = syn[syn["set"] == name]
        other = mine[~belongs[syn["set"] == name]]
        if len(other):
            raise ParameterError(PARAM, f"{name!r} already names a set of {len(mine)} images, {len(other)} of them from "
                                        f"other files (e.g. {other['path'].iloc[0]}); give this set another name, "
                                        "or extract into another store")
        prefix = mine["image"].iloc[0].split("/", 1)[0]
    elif not order:
        prefix = FIRST_SET_PREFIX
    elif name == FIRST_SET_PREFIX:
        raise ParameterError(PARAM, f"{name!r} is taken: the ids of this store's first set {order[0]!r} start with "
                                    f"{FIRST_SET_PREFIX}/; give this set another name")
    else:
        prefix = name
    return name, prefix, notes


def place_set(manifest: list[Entry], stored: pd.DataFrame, set_name: str, prefix: str) -> list[Entry]:
    """The run's entries as the store will hold them: synthetic ones in set ``set_name`` with ids
    ``<prefix>/<relative path>``, real ones already stored (same sha256) under their stored id,
    and pairs naming those ids.

    Raises
    ------
    ParameterError
        A synthetic id would be one that another set or a real image holds.
    """
    real_ids = dict(zip(stored.loc[stored["domain"] == "real", "sha256"][::-1],
                        stored.loc[stored["domain"] == "real", "image"][::-1]))  # the first stored wins
    new_id = {e.image: (real_ids.get(e.sha256, e.image) if e.domain == "real" else f"{prefix}/{e.relpath}")
              for e in manifest}
    out = [replace(e, image=new_id[e.image], pair=new_id.get(e.pair, "") if e.pair else "",
                   set=set_name if e.domain == "synthetic" else "")
           for e in manifest]
    owner = dict(zip(stored["image"], stored["set"]))
    clash = [e.image for e in out if e.domain == "synthetic" and owner.get(e.image, set_name) != set_name]
    if clash:
        raise ParameterError(PARAM, f"{set_name!r} would store {clash[0]}, an id another set or a real image holds; "
                                    "give this set another name")
    return out


def real_pairs(table: pd.DataFrame) -> dict[str, str]:
    """The ``pair`` each real image of ``table`` (columns ``image, domain, pair`` in store order)
    should hold: the one it holds while that synthetic image is still paired with it, else the
    first synthetic image in store order paired with it, else ``""``."""
    syn = table[table["domain"] == "synthetic"]
    syn = syn[syn["pair"] != ""]
    paired = set(zip(syn["image"], syn["pair"]))
    first: dict[str, str] = {}
    for img, pair in zip(syn["image"], syn["pair"]):
        first.setdefault(pair, img)
    real = table[table["domain"] == "real"]
    return {r: (p if (p, r) in paired else first.get(r, "")) for r, p in zip(real["image"], real["pair"])}

