"""The list of images to extract: ids, domains, pairs and content hashes.

Ids, as a store holds them (DESIGN.md section 3; the rules are in :mod:`fakesegment_nb.sets`):

- a real image: ``real/<path relative to the real folder>``, e.g. ``real/town/scene_003.png``;
  a real image already stored (same sha256) keeps the id it was stored under;
- the store's first synthetic set: ``synthetic/<path relative to its folder>`` whatever the
  set's name (what every store held before sets: a store of one set keeps these ids);
- every later set: ``<set>/<path relative to its folder>``, e.g. ``enhanced/town/scene_003.png``.

A set name is one folder name and never ``real``, nor ``synthetic`` for a later set, so ids are
unique across sets, and ``id.split("/", 1)[1]`` is always the path relative to the folder.
:func:`build_manifest` gives the ``<domain>/<path>`` ids; extraction places them in a set.
"""

from __future__ import annotations

import csv
import hashlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

from .errors import FakesegmentError
from .images import IMAGE_EXTENSIONS

__all__ = ["Entry", "build_manifest", "image_files", "scan_folder", "read_pairs_csv", "pairs_by_stem", "file_sha256",
           "DOMAINS"]

DOMAINS = ("real", "synthetic")


@dataclass(frozen=True)
class Entry:
    """One image file.

    ``image`` is the id ``<domain>/<path relative to its folder>`` (a store may give a synthetic
    set's images another first part: :func:`fakesegment_nb.sets.place_set`); ``key`` is that
    relative path without its suffix, which is what pairs by stem compare; ``set`` is a synthetic
    image's set name (``""`` for real images, and until a set is chosen).
    """

    image: str
    domain: str
    path: str
    key: str
    sha256: str
    pair: str = ""
    set: str = ""

    @property
    def relpath(self) -> str:
        """The path relative to its folder (the id without its first part)."""
        return self.image.split("/", 1)[1]


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def image_files(folder: str | Path, domain: str) -> list[Path]:
    """The image files under ``folder`` (recursive), sorted by path: what :func:`scan_folder`
    reads, without reading it (a quick check of the folder).

    Raises
    ------
    FakesegmentError
        The folder is missing, not a folder, or holds no image files.
    """
    if domain not in DOMAINS:
        raise FakesegmentError(f"unknown domain {domain!r}; expected one of {DOMAINS}")
    root = Path(folder)
    if not root.exists():
        raise FakesegmentError(f"{domain} folder {root} does not exist")
    if not root.is_dir():
        raise FakesegmentError(f"{domain} folder {root} is not a folder")
    files = sorted(p for p in root.rglob("*")
                   if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith("."))
    if not files:
        raise FakesegmentError(
            f"{domain} folder {root} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    return files


def scan_folder(folder: str | Path, domain: str) -> list[Entry]:
    """All image files under ``folder`` (recursive), sorted by relative path, with their sha256
    (hashed two files at a time: hashlib lets go of the GIL).

    Raises
    ------
    FakesegmentError
        The folder is missing, not a folder, or holds no image files.
    """
    files = image_files(folder, domain)
    root = Path(folder)
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="sha256") as pool:
        hashes = list(pool.map(file_sha256, files))
    entries = []
    for p, digest in zip(files, hashes):
        rel = p.relative_to(root).as_posix()
        entries.append(Entry(image=f"{domain}/{rel}", domain=domain, path=str(p.resolve()),
                             key=rel.rsplit(".", 1)[0], sha256=digest))
    return entries


def _resolve_listed(name: str, folder: Path, entries: list[Entry], where: str) -> Entry:
    by_path = {e.path: e for e in entries}
    by_rel = {e.relpath: e for e in entries}
    by_key = {}
    for e in entries:
        by_key.setdefault(e.key, []).append(e)
    name = name.strip()
    candidates = [by_rel.get(name), by_path.get(str((folder / name).resolve())),
                  by_path.get(str(Path(name).resolve())) if Path(name).is_absolute() else None]
    for c in candidates:
        if c is not None:
            return c
    if len(by_key.get(name, [])) == 1:
        return by_key[name][0]
    raise FakesegmentError(f"{where}: {name!r} is not an image in {folder}")


def read_pairs_csv(csv_path: str | Path, real_dir: Path, synthetic_dir: Path,
                   real: list[Entry], synthetic: list[Entry]) -> dict[str, str]:
    """Map synthetic image id -> real image id from a CSV with columns ``synthetic,real``.

    Names may be paths relative to their folder, absolute paths, or stems.
    """
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise FakesegmentError(f"pairs file {csv_path} does not exist")
    with open(csv_path, newline="") as f:
        reader = csv.DictReader(f)
        cols = [c.strip() for c in (reader.fieldnames or [])]
        if "synthetic" not in cols or "real" not in cols:
            raise FakesegmentError(f"pairs file {csv_path} needs the columns synthetic,real; it has {cols}")
        reader.fieldnames = cols
        pairs: dict[str, str] = {}
        for lineno, row in enumerate(reader, start=2):
            where = f"{csv_path.name} line {lineno}"
            s = _resolve_listed(row["synthetic"] or "", synthetic_dir, synthetic, where)
            r = _resolve_listed(row["real"] or "", real_dir, real, where)
            if s.image in pairs and pairs[s.image] != r.image:
                raise FakesegmentError(f"{where}: {s.image} is paired twice")
            pairs[s.image] = r.image
    if not pairs:
        raise FakesegmentError(f"pairs file {csv_path} lists no pairs")
    return pairs


def pairs_by_stem(real: list[Entry], synthetic: list[Entry]) -> dict[str, str]:
    """Pair synthetic and real files that share their relative path without suffix."""
    real_by_key: dict[str, list[Entry]] = {}
    for e in real:
        real_by_key.setdefault(e.key, []).append(e)
    return {s.image: real_by_key[s.key][0].image
            for s in synthetic if len(real_by_key.get(s.key, [])) == 1}


def build_manifest(real: str | Path, synthetic: str | Path, pairs: str | Path | None = None,
                   ) -> tuple[list[Entry], list[str]]:
    """Scan both folders and pair them.

    Returns the entries (real first, then synthetic, each sorted by path) and notes for the user
    (duplicate contents skipped).
    """
    real_entries = scan_folder(real, "real")
    syn_entries = scan_folder(synthetic, "synthetic")
    if pairs is not None:
        mapping = read_pairs_csv(pairs, Path(real), Path(synthetic), real_entries, syn_entries)
    else:
        mapping = pairs_by_stem(real_entries, syn_entries)
    reverse = {r: s for s, r in mapping.items()}
    notes: list[str] = []
    out: list[Entry] = []
    seen: dict[tuple[str, str], str] = {}
    for e in real_entries + syn_entries:
        k = (e.domain, e.sha256)
        if k in seen:
            notes.append(f"{e.image}: same content as {seen[k]}, skipped")
            continue
        seen[k] = e.image
        pair = mapping.get(e.image, "") if e.domain == "synthetic" else reverse.get(e.image, "")
        out.append(replace(e, pair=pair))
    kept = {e.image for e in out}
    out = [e if (not e.pair or e.pair in kept) else replace(e, pair="") for e in out]
    return out, notes
