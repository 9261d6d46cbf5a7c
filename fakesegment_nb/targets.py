"""Where a store is written: a folder on this machine, or an fsspec URL.

:class:`~fakesegment_nb.writer.StoreWriter` asks the place it writes to for four things, and
each kind of place answers them its own way (as zarr's stores declare what they support,
``zarr/abc/store.py``):

- :meth:`StoreTarget.lock`: keep a second writer out while one appends;
  :attr:`StoreTarget.exclusive` says whether it truly can;
- :meth:`StoreTarget.clear`: empty the store before it is created afresh;
- :attr:`StoreTarget.zarr_store`: the zarr store that zarr and xarray write to;
- :meth:`StoreTarget.remove_partials`: delete what an interrupted write left behind.

Concurrent writers, plainly:

- :class:`LocalTarget` locks with ``flock`` on the store folder: a second writer on this machine
  is refused at once, and the kernel releases the lock when the holder dies. Writers on other
  machines sharing the folder are kept out only where the file system implements ``flock``
  across clients (NFS does through its lock manager; some network file systems do not).
- :class:`RemoteTarget` locks with a ``<store>.fakesegment.lock`` key beside the store: checked,
  then written. It is **not exclusive**: two writers starting within one round trip of each
  other can both pass the check and then race (rows written twice, a commit lost). It catches
  the usual mistake, a second run started while one is going; run one writer per store. A run
  that dies leaves the key behind, and the refusal names it.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from abc import ABC, abstractmethod
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import zarr

from .errors import FakesegmentError

__all__ = ["LocalTarget", "RemoteTarget", "StoreBusy", "StoreTarget", "is_local", "local_path", "normalise",
           "store_target"]


class StoreBusy(FakesegmentError):
    """Another writer holds the store's lock."""


def is_local(url) -> bool:
    """True for a plain path or a ``file://`` URL."""
    return "://" not in str(url) or str(url).startswith("file://")


def normalise(url) -> str:
    """``file://`` URLs become plain paths (zarr's LocalStore: atomic writes, flock)."""
    return str(url).removeprefix("file://")


def local_path(url) -> Path:
    return Path(normalise(url))


class StoreTarget(ABC):
    """A store's location, with what writing to it needs."""

    #: whether :meth:`lock` keeps every other writer out (see the module docstring)
    exclusive: bool

    def __init__(self, url, storage_options: dict | None = None):
        self.url = normalise(url)
        self.storage_options = storage_options
        self._zarr_store = None

    @property
    def zarr_store(self) -> zarr.abc.store.Store:
        """One zarr store object, kept: opening the location again on every write costs more
        than compressing a batch."""
        if self._zarr_store is None:
            self._zarr_store = self._open_zarr_store()
        return self._zarr_store

    @abstractmethod
    def _open_zarr_store(self) -> zarr.abc.store.Store: ...

    @abstractmethod
    @contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the writer lock; raise :class:`StoreBusy` at once if another writer holds it."""

    @abstractmethod
    def clear(self) -> None:
        """Delete everything in the store (the lock stays held)."""

    @abstractmethod
    def remove_partials(self) -> None:
        """Delete files an interrupted write left half-written."""


class LocalTarget(StoreTarget):
    """A folder on this machine."""

    exclusive = True

    @property
    def path(self) -> Path:
        return local_path(self.url)

    def _open_zarr_store(self):
        return zarr.storage.LocalStore(self.path)

    @contextmanager
    def lock(self) -> Iterator[None]:
        # flock on the folder itself: clear() must therefore keep the folder
        self.path.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDONLY)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise StoreBusy(f"another process is extracting into {self.url}; "
                                "run again when it has finished") from None
            yield
        finally:
            os.close(fd)

    def clear(self) -> None:
        """Empty the folder but keep it: the writer lock is held on this very folder."""
        self.path.mkdir(parents=True, exist_ok=True)
        for child in self.path.iterdir():
            shutil.rmtree(child) if child.is_dir() else child.unlink()

    def remove_partials(self) -> None:
        # zarr's LocalStore writes <key>.<uuid>.partial and renames it into place
        for p in self.path.rglob("*.partial"):
            p.unlink(missing_ok=True)


class RemoteTarget(StoreTarget):
    """An fsspec URL (``s3://``, ``gs://``, ``memory://``, ...)."""

    exclusive = False  # a key checked, then written: see the module docstring

    def _fs(self):
        import fsspec

        return fsspec.core.url_to_fs(self.url, **(self.storage_options or {}))

    def _open_zarr_store(self):
        return zarr.storage.FsspecStore.from_url(self.url, storage_options=self.storage_options)

    @contextmanager
    def lock(self) -> Iterator[None]:
        fs, root = self._fs()
        key = root.rstrip("/") + ".fakesegment.lock"
        if fs.exists(key):
            raise StoreBusy(f"{self.url} is locked by another extraction ({key}); "
                            "if none is running, delete that key")
        fs.pipe(key, f"{os.getpid()}@{os.uname().nodename}".encode())
        try:
            yield
        finally:
            fs.rm(key)

    def clear(self) -> None:
        fs, root = self._fs()
        if fs.exists(root):
            fs.rm(root, recursive=True)

    def remove_partials(self) -> None:
        """Nothing to do: object stores write whole objects."""


def store_target(url, storage_options: dict | None = None) -> StoreTarget:
    """The target for ``url``: :class:`LocalTarget` for paths and ``file://``, else :class:`RemoteTarget`."""
    return (LocalTarget if is_local(url) else RemoteTarget)(url, storage_options)
