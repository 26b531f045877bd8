"""Provides `Shipper`: a task's inputs in a form a remote Dask worker can read.

Inputs that live as files in the runner's artifact store are read on the runner (a remote worker
cannot see that path). Inputs over `INLINE_MAX` are `scatter`ed under a content-addressed key and
replaced by a placeholder the worker resolves (`dask_worker`): Dask then moves such a value to each
worker that needs it once, and keeps it there while a task holds it, so a dataset read by a 1,000-way
fan-out is read, hashed and sent once, not 1,000 times.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from runner.artifacts import INLINE_MAX, read_file_checked
from runner.executors.base import InputRef
from runner.executors.dask_worker import BLOB_MARK

if TYPE_CHECKING:
    from distributed import Client, Future

BLOB_CACHE = 64
"""Large inputs kept scattered on the cluster for reuse by later tasks (most recently used first)."""

_BLOB_KEY = "flow-blob-"


class Shipper:
    """Ships inputs to `client`'s cluster, keeping the last `BLOB_CACHE` scattered values for reuse."""

    def __init__(self, client: Client) -> None:
        self._client = client
        self._blobs: OrderedDict[str, Future[Any]] = OrderedDict()

    def ship(self, ref: InputRef, blobs: dict[str, Future[Any]]) -> InputRef:
        """`ref` as a remote worker can read it; the scattered values it needs are added to `blobs`.

        Raises:
            ArtifactError: an input file is missing or does not match its hash.
        """
        if ref.parts is not None:
            return dataclasses.replace(ref, parts=tuple(self.ship(p, blobs) for p in ref.parts))
        cached = self._blobs.get(ref.hash)
        if cached is not None and cached.status == "finished" and not ref.none:
            self._blobs.move_to_end(ref.hash)
            blobs[ref.hash] = cached
            return InputRef(hash=ref.hash, path=BLOB_MARK + ref.hash)
        data = ref.data
        if ref.path is not None:
            data = read_file_checked(ref.path, ref.hash)
        if data is None:
            return ref
        if len(data) <= INLINE_MAX:
            return InputRef(hash=ref.hash, data=data)
        [future] = self._client.scatter({_BLOB_KEY + ref.hash: data}, hash=False).values()
        self._blobs[ref.hash] = blobs[ref.hash] = future
        while len(self._blobs) > BLOB_CACHE:
            self._blobs.popitem(last=False)  # tasks still pending keep their own reference
        return InputRef(hash=ref.hash, path=BLOB_MARK + ref.hash)

    def drop(self) -> list[Future[Any]]:
        """Forget every scattered value; return their futures (for the caller to cancel)."""
        futures = list(self._blobs.values())
        self._blobs.clear()
        return futures
