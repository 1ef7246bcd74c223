"""Vectors in Milvus: a shared, server-side index that outgrows one machine.

The same class talks to a Milvus cluster, a standalone server, or Milvus Lite
(``milvus-lite``, the same gRPC protocol served from one Python process): only
the URI changes.

Unlike the embedded stores, the data lives on the server. Every change is
visible to every process as soon as the call returns (the collection is created
with consistency level ``"Strong"`` and every read asks for it), and
[`MilvusVectorStore.save`][multimodal_rag.vectors.milvus.MilvusVectorStore.save] writes only a small marker naming the collection.
A knowledge base's snapshot therefore pins the *collection*, not its contents:
changes made after the last save are not rolled back when it is reopened.

The collection also keeps a copy of each record's metadata (a JSON field laid out by
`milvus_document`), so that a search filtered by metadata is
one request: [`MilvusVectorStore.search_where`][multimodal_rag.vectors.milvus.MilvusVectorStore.search_where]. The knowledge base keeps the copy in
step with its description store, which stays the source of truth.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from multimodal_rag._extras import require
from multimodal_rag._remote import (
    fresh_name,
    may_send_credentials,
    same_endpoint,
    split_credentials,
    valid_name,
    withheld_hint,
)
from multimodal_rag._validation import (
    check_ids,
    check_int,
    check_queries,
    check_timeout,
    check_vectors,
)
from multimodal_rag.errors import (
    BackendError,
    CorruptFileError,
    InvalidInputError,
    NotFoundError,
)
from multimodal_rag.filters.milvus import NotExpressible, milvus_document
from multimodal_rag.protocols import IdFilter, VectorStore
from multimodal_rag.types import Neighbor, Vectors
from multimodal_rag.vectors.milvus_collection import (
    CONSISTENCY,
    DEFAULT_INDEX_PARAMS,
    DEFAULT_SEARCH_PARAMS,
    ID_FIELD,
    MAX_ID_BYTES,
    METADATA_FIELD,
    METRIC,
    VECTOR_FIELD,
    check_collection,
    create_collection,
)
from multimodal_rag.vectors.milvus_errors import is_client_error, translate_error
from multimodal_rag.vectors.milvus_filters import id_after, id_in, id_in_chunks, id_set_of
from multimodal_rag.vectors.ranking import filtered_search

if TYPE_CHECKING:
    from multimodal_rag.filters import MetadataFilter

__all__ = ["MilvusVectorStore"]

#: Environment variables read when ``uri`` / ``token`` are not passed.
URI_ENV = "MILVUS_URI"
TOKEN_ENV = "MILVUS_TOKEN"

_MARKER_FILE = "milvus.json"
# The most results (offset + limit) one Milvus request returns.
_MAX_TOPK = 16_384
_QUERY_CHUNK = 1_024
# The least HNSW "ef" of a filtered search. A filter hides most of the graph from the
# traversal: with Milvus Lite and ef 64, a filter passing 1 % of 5,000 vectors found 60 % of
# the true top 10, with ef 1,024 all of them, in the same time.
_FILTERED_EF = 1_024


class MilvusVectorStore(VectorStore):
    """Inner-product search in a Milvus collection, one collection per knowledge base.

    The collection has an explicit schema: a VARCHAR primary key holding the id,
    a FLOAT_VECTOR field of dimension ``dim``, indexed with metric ``IP``, and a JSON
    field ``metadata`` with the copy of each record's metadata that
    [`search_where`][multimodal_rag.vectors.milvus.MilvusVectorStore.search_where] filters on. It is created on first use; an existing one is
    checked to have the same dimension and metric. One made by an earlier version,
    without the JSON field, works as before: [`filters_metadata`][multimodal_rag.vectors.milvus.MilvusVectorStore.filters_metadata] is false, and
    filtered searches send the ids the description store found.

    Args:
        dim: Dimension of the vectors.
        uri: Where Milvus listens (``http://host:19530``), or a local file path for an
            embedded Milvus Lite. Defaults to ``$MILVUS_URI``. A ``user:password@`` in
            it is used as the token and never saved.
        collection: Collection name; a fresh ``mrag_...`` name by default.
        token: ``"user:password"`` or an API key; defaults to ``$MILVUS_TOKEN``.
            Never written to the manifest. When a knowledge base's manifest names the
            server, ``$MILVUS_TOKEN`` (or the credentials in ``$MILVUS_URI``) go only to
            the server ``$MILVUS_URI`` names or one the caller allowed with
            ``MultimodalRAG.open(..., allow_endpoints=[...])``; any other is reached
            without them.
        index_type: ``"HNSW"`` (default), ``"IVF_FLAT"``, ``"IVF_SQ8"``, ``"HNSW_SQ"``,
            ``"FLAT"``, ``"AUTOINDEX"`` or another type the server supports.
        index_params: Build parameters (``{"M": 16, "efConstruction": 200}`` for HNSW,
            ``{"nlist": 128}`` for IVF).
        search_params: Search parameters (``{"ef": 64}`` for HNSW, raised to ``k``
            when needed; ``{"nprobe": 16}`` for IVF).
        timeout: Seconds to wait for the server on each call.
        max_batch_bytes: Upper bound on the payload of one insert request, kept
            under the server's gRPC message-size limit (64 MiB by default).
        create: Create the collection when it does not exist; with ``False`` a
            missing collection is an error (how [`load`][multimodal_rag.vectors.milvus.MilvusVectorStore.load] reconnects).

    Raises:
        InvalidInputError: No URI, or a bad name, dimension or index setting.
        BackendConnectionError: Milvus cannot be reached, or refuses the credentials.
        DimensionMismatchError: The existing collection holds vectors of another dimension.
        BackendError: The existing collection has another schema or metric.
    """

    kind: ClassVar[str] = "milvus"

    def __init__(
        self,
        dim: int,
        *,
        uri: str | None = None,
        collection: str | None = None,
        token: str | None = None,
        index_type: str = "HNSW",
        index_params: dict[str, Any] | None = None,
        search_params: dict[str, Any] | None = None,
        timeout: float = 30.0,
        max_batch_bytes: int = 16 << 20,
        create: bool = True,
    ) -> None:
        dim = check_int("dim", dim)
        uri = uri if uri is not None else os.environ.get(URI_ENV)
        if not uri:
            raise InvalidInputError(f"no Milvus URI: pass uri= or set ${URI_ENV}")
        bare_uri, user, password = split_credentials(uri)
        env_uri = os.environ.get(URI_ENV)
        trusted = may_send_credentials(bare_uri, env=env_uri, same=same_endpoint)
        env_token = os.environ.get(TOKEN_ENV) or _token_of(env_uri, bare_uri)
        if token is None:
            token = (env_token if trusted else None) or (
                f"{user}:{password or ''}" if user else None
            )
        # A server only a manifest names gets none of the environment's credentials; if it
        # asks for some, the error says how the caller can vouch for it.
        self._hint = (
            withheld_hint(bare_uri, f"${TOKEN_ENV} and the credentials of ${URI_ENV}")
            if env_token and not trusted
            else ""
        )
        if not isinstance(index_type, str) or not index_type:
            raise InvalidInputError(f"index_type must be a non-empty string, got {index_type!r}")
        max_batch_bytes = check_int("max_batch_bytes", max_batch_bytes)
        timeout = check_timeout(timeout)
        self._dim = dim
        self._uri = bare_uri
        self._collection = (
            valid_name(collection, what="collection") if collection else fresh_name("mrag")
        )
        self._index_type = index_type.upper()
        self._index_params = dict(
            index_params
            if index_params is not None
            else DEFAULT_INDEX_PARAMS.get(self._index_type, {})
        )
        self._search_params = dict(
            search_params
            if search_params is not None
            else DEFAULT_SEARCH_PARAMS.get(self._index_type, {})
        )
        self._timeout = float(timeout)
        self._max_batch_bytes = max_batch_bytes
        self._token = token
        pymilvus = require("pymilvus", user="MilvusVectorStore", extra="milvus")
        with self._calls("connect"):
            self._client = self._connect(pymilvus, bare_uri, token)
        self._open_collection(create=create)

    def _connect(self, pymilvus: Any, uri: str, token: str | None) -> Any:
        # A busy server may drop a new connection (gRPC GOAWAY); a short retry rides it
        # out, while a server that is really down still fails within a couple of seconds.
        for delay in (0.25, 1.0, None):
            try:
                return pymilvus.MilvusClient(uri=uri, token=token or "", timeout=self._timeout)
            except Exception as exc:
                unreachable = is_client_error(exc) and str(
                    translate_error(exc, action="connect", uri=uri, secret=token)
                ).startswith("cannot reach")
                if delay is None or not unreachable:
                    raise
                time.sleep(delay)
        raise AssertionError("unreachable")

    # -- setup -------------------------------------------------------------------

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def uri(self) -> str:
        """The server's URI, without credentials."""
        return self._uri

    @property
    def collection(self) -> str:
        """The Milvus collection holding this store's vectors."""
        return self._collection

    def config(self) -> dict[str, Any]:
        return {
            "uri": self._uri,
            "collection": self._collection,
            "index_type": self._index_type,
            "index_params": dict(self._index_params),
            "search_params": dict(self._search_params),
            "timeout": self._timeout,
        }

    def _open_collection(self, *, create: bool) -> None:
        client = self._client
        with self._calls("open the collection"):
            exists = client.has_collection(self._collection, timeout=self._timeout)
            self._has_metadata = True
            if not exists:
                if not create:
                    raise BackendError(
                        f"Milvus at {self._uri} has no collection {self._collection!r}; "
                        "it was dropped or the knowledge base points at another server"
                    )
                create_collection(
                    client,
                    self._collection,
                    dim=self._dim,
                    index_type=self._index_type,
                    index_params=self._index_params,
                    timeout=self._timeout,
                )
            else:
                self._has_metadata = check_collection(
                    client, self._collection, dim=self._dim, uri=self._uri, timeout=self._timeout
                )
            client.load_collection(self._collection, timeout=self._timeout)

    @property
    def filters_metadata(self) -> bool:
        """Whether the collection keeps the metadata copy (false for one made before it did)."""
        return self._has_metadata

    @contextmanager
    def _calls(self, action: str) -> Iterator[None]:
        """Turn pymilvus and gRPC failures into the library's errors, naming the server."""
        try:
            yield
        except BackendError:
            raise
        except Exception as exc:
            if not is_client_error(exc):
                raise
            raise translate_error(
                exc, action=action, uri=self._uri, secret=self._token, hint=self._hint
            ) from None

    # -- reads -------------------------------------------------------------------

    def __len__(self) -> int:
        with self._calls("count vectors"):
            rows = self._client.query(
                self._collection,
                filter="",
                output_fields=["count(*)"],
                consistency_level=CONSISTENCY,
                timeout=self._timeout,
            )
        return int(rows[0]["count(*)"])

    def __contains__(self, id: object) -> bool:
        return isinstance(id, str) and bool(id) and bool(self._existing([id]))

    def ids(self) -> list[str]:
        out: list[str] = []
        last: str | None = None
        with self._calls("list ids"):
            while True:
                # With "iterator" the server returns the smallest ids past the cursor, in
                # order, so the id itself is the page cursor (no offset window limit).
                page = self._client.query(
                    self._collection,
                    filter="" if last is None else id_after(last),
                    output_fields=[ID_FIELD],
                    limit=_MAX_TOPK,
                    iterator="True",
                    consistency_level=CONSISTENCY,
                    timeout=self._timeout,
                )
                if not page:
                    return out
                batch = sorted(row[ID_FIELD] for row in page)
                out.extend(batch)
                last = batch[-1]

    def _rows_of(self, ids: Iterable[str], fields: list[str]) -> Iterator[list[dict[str, Any]]]:
        """The rows of ``ids`` (each once) with ``fields``, a chunk of ids per request; the
        caller holds `_calls` around the loop."""
        for expression in id_in_chunks(list(dict.fromkeys(ids))):
            yield self._client.query(
                self._collection,
                filter=expression,
                output_fields=[ID_FIELD, *fields],
                consistency_level=CONSISTENCY,
                timeout=self._timeout,
            )

    def _existing(self, ids: Sequence[str]) -> set[str]:
        found: set[str] = set()
        with self._calls("look up ids"):
            for rows in self._rows_of(ids, []):
                found.update(row[ID_FIELD] for row in rows)
        return found

    def get_vectors(self, ids: Sequence[str]) -> Vectors:
        ids = list(ids)
        vectors: dict[str, Any] = {}
        with self._calls("read vectors"):
            for rows in self._rows_of(ids, [VECTOR_FIELD]):
                vectors.update((row[ID_FIELD], row[VECTOR_FIELD]) for row in rows)
        missing = next((i for i in ids if i not in vectors), None)
        if missing is not None:
            raise NotFoundError(f"id {missing!r} is not in the vector store")
        out = np.empty((len(ids), self._dim), dtype=np.float32)
        for row, id_ in enumerate(ids):
            out[row] = vectors[id_]
        return out

    def search(
        self, queries: Vectors, k: int, *, filter: IdFilter | None = None
    ) -> list[list[Neighbor]]:
        """Find the ``k`` nearest vectors of each query.

        A filter that is the ``__contains__`` of a set (``wanted.__contains__``) is sent
        to the server as an ``id in [...]`` expression, so Milvus searches only those
        ids; any other predicate is applied here to an over-fetched result.
        """
        array = check_queries(queries, self._dim, k)
        if filter is None:
            return self._search(array, k)
        wanted = id_set_of(filter)
        if wanted is not None:
            ids = [i for i in wanted if isinstance(i, str) and i]
            if not ids:
                return [[] for _ in range(len(array))]
            return self._search(array, min(k, len(ids)), expression=id_in(sorted(ids)))
        return filtered_search(self._search, array, k, len(self), filter)

    def search_where(self, queries: Vectors, k: int, where: MetadataFilter) -> list[list[Neighbor]]:
        """Find the ``k`` nearest vectors of each query among those whose metadata copy passes
        ``where``, in one request: the filter is sent as a Milvus expression on the JSON field
        ([`to_milvus`][multimodal_rag.filters.MetadataFilter.to_milvus]).

        Raises:
            NotExpressible: The collection has no metadata copy, or the filter has no exact
                Milvus expression; nothing was sent.
        """
        array = check_queries(queries, self._dim, k)
        if not self._has_metadata:
            raise NotExpressible(f"collection {self._collection!r} keeps no metadata")
        return self._search(array, k, expression=where.to_milvus(METADATA_FIELD))

    def _search(self, queries: np.ndarray, k: int, *, expression: str = "") -> list[list[Neighbor]]:
        limit = min(k, _MAX_TOPK)
        params = dict(self._search_params)
        if "ef" in params:  # HNSW returns at most ef results
            params["ef"] = max(int(params["ef"]), limit, _FILTERED_EF if expression else 0)
        results: list[list[Neighbor]] = []
        with self._calls("search"):
            for start in range(0, len(queries), _QUERY_CHUNK):
                rows = self._client.search(
                    self._collection,
                    data=list(queries[start : start + _QUERY_CHUNK]),
                    limit=limit,
                    filter=expression,
                    output_fields=[ID_FIELD],
                    search_params={"metric_type": METRIC, "params": params},
                    consistency_level=CONSISTENCY,
                    timeout=self._timeout,
                )
                results.extend(
                    [Neighbor(hit["id"], float(hit["distance"])) for hit in row] for row in rows
                )
        return results

    # -- writes ------------------------------------------------------------------

    def add(self, ids: Sequence[str], vectors: Vectors) -> None:
        """Insert or replace vectors (Milvus upsert), in requests under ``max_batch_bytes``.

        Input is checked before anything is sent. A batch the server refuses half-way
        through a large add leaves the earlier batches stored. Each added vector's metadata
        copy starts empty (an upsert replaces whole rows); [`set_metadata`][multimodal_rag.vectors.milvus.MilvusVectorStore.set_metadata] fills it.
        """
        ids = check_ids(ids)
        array = check_vectors(vectors, self._dim, count=len(ids))
        sizes = [len(i.encode("utf-8")) for i in ids]
        too_long = next(
            (i for i, size in zip(ids, sizes, strict=True) if size > MAX_ID_BYTES), None
        )
        if too_long is not None:
            raise InvalidInputError(
                f"id {too_long[:40]!r}... is longer than Milvus's {MAX_ID_BYTES} bytes"
            )
        with self._calls("insert vectors"):
            self._upsert(
                (self._row(id_, vector, {}), size)
                for id_, size, vector in zip(ids, sizes, array, strict=True)
            )

    def _row(self, id_: str, vector: Any, document: dict[str, Any]) -> dict[str, Any]:
        row = {ID_FIELD: id_, VECTOR_FIELD: vector}
        if self._has_metadata:
            row[METADATA_FIELD] = document
        return row

    def _upsert(self, rows: Iterable[tuple[dict[str, Any], int]]) -> None:
        """Upsert ``(row, bytes beyond the vector)`` pairs, in requests under ``max_batch_bytes``."""
        row_overhead = 4 * self._dim + 64  # vector bytes plus framing per row
        batch: list[dict[str, Any]] = []
        batch_bytes = 0
        for row, size in rows:
            if batch and batch_bytes + size + row_overhead > self._max_batch_bytes:
                self._client.upsert(self._collection, batch, timeout=self._timeout)
                batch, batch_bytes = [], 0
            batch.append(row)
            batch_bytes += size + row_overhead
        if batch:
            self._client.upsert(self._collection, batch, timeout=self._timeout)

    def set_metadata(self, items: Mapping[str, Mapping[str, Any]]) -> None:
        """Replace the metadata copy of ids in the collection; ids it does not hold are ignored.

        Each row is read and written back whole, since an upsert replaces whole rows (which
        works on every Milvus version). Does nothing on a collection without the copy.
        """
        if not self._has_metadata:
            return
        documents = {id_: milvus_document(metadata) for id_, metadata in items.items()}
        with self._calls("store metadata"):
            for rows in self._rows_of(sorted(documents), [VECTOR_FIELD]):
                self._upsert(
                    (
                        self._row(row[ID_FIELD], row[VECTOR_FIELD], documents[row[ID_FIELD]]),
                        len(row[ID_FIELD].encode("utf-8")) + len(json.dumps(documents[row[ID_FIELD]])),
                    )
                    for row in rows
                )

    def metadata_mismatches(self, items: Mapping[str, Mapping[str, Any]]) -> list[str]:
        """The ids among ``items`` held here whose metadata copy is not that metadata's."""
        if not self._has_metadata:
            return []
        differ: list[str] = []
        with self._calls("read metadata"):
            for rows in self._rows_of(sorted(items), [METADATA_FIELD]):
                differ.extend(
                    row[ID_FIELD]
                    for row in rows
                    if row.get(METADATA_FIELD) != milvus_document(items[row[ID_FIELD]])
                )
        return sorted(differ)

    def remove(self, ids: Iterable[str]) -> int:
        if isinstance(ids, str):
            ids = [ids]
        # Milvus counts requested keys, not deleted ones: look them up first.
        present = sorted(self._existing([i for i in ids if isinstance(i, str) and i]))
        with self._calls("delete vectors"):
            for expression in id_in_chunks(present):
                self._client.delete(self._collection, filter=expression, timeout=self._timeout)
        return len(present)

    def flush(self) -> None:
        """Ask the server to seal what was inserted and index it.

        Inserted vectors are searchable at once, but until they are sealed the server
        scans them without the index. Milvus seals on its own as segments fill up;
        [`save`][multimodal_rag.vectors.milvus.MilvusVectorStore.save] flushes too, so call this only after a bulk load that is searched
        before the next save.
        """
        with self._calls("flush"):
            self._client.flush(self._collection, timeout=self._timeout)

    def drop(self) -> None:
        """Delete the collection and every vector in it, on the server."""
        with self._calls("drop the collection"):
            self._client.drop_collection(self._collection, timeout=self._timeout)

    def close(self) -> None:
        """Close the connection to the server."""
        with self._calls("close the connection"):
            self._client.close()

    # -- persistence -------------------------------------------------------------

    def save(self, directory: Path) -> None:
        """Flush, and write a marker naming the server and collection (the vectors stay there)."""
        self.flush()
        marker = {"uri": self._uri, "collection": self._collection, "dim": self._dim}
        (Path(directory) / _MARKER_FILE).write_text(
            json.dumps(marker, indent=2) + "\n", encoding="utf-8"
        )

    @classmethod
    def load(cls, directory: Path, *, dim: int | None = None, **config: Any) -> MilvusVectorStore:
        """Reconnect to the collection named in ``config`` (the manifest's copy).

        Without ``dim``, the dimension is the one [`save`][multimodal_rag.vectors.milvus.MilvusVectorStore.save] wrote into its marker file.
        The token comes from ``$MILVUS_TOKEN`` (or a ``token=`` in ``config``); when
        [`MultimodalRAG.open`][multimodal_rag._rag.MultimodalRAG.open] loads a manifest, only
        for a server that ``$MILVUS_URI`` names or the caller allowed.

        Raises:
            BackendError: The collection no longer exists on that server.
            DimensionMismatchError: The collection holds vectors of another dimension than ``dim``.
            CorruptFileError: Without ``dim``, a marker file that does not say the dimension.
        """
        if dim is None:
            path = Path(directory) / _MARKER_FILE
            try:
                dim = json.loads(path.read_text(encoding="utf-8"))["dim"]
                if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
                    raise ValueError(f"'dim' is {dim!r}, not a positive integer")
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise CorruptFileError(f"cannot read the dimension from {str(path)!r}: {exc!r}") from exc
        return cls(dim, create=False, **config)

    def __repr__(self) -> str:
        where = f"uri={self._uri!r}, collection={self._collection!r}"
        return f"MilvusVectorStore({where}, dim={self._dim})"


def _token_of(env_uri: str | None, uri: str) -> str | None:
    """The ``user:password`` written into ``$MILVUS_URI``, when it names the server ``uri``."""
    if not env_uri or not same_endpoint(env_uri, uri):
        return None
    _, user, password = split_credentials(env_uri)
    return f"{user}:{password or ''}" if user else None
