"""The Milvus collection behind [`MilvusVectorStore`][multimodal_rag.vectors.milvus.MilvusVectorStore].

Its schema (a VARCHAR primary key, a FLOAT_VECTOR field and a JSON field holding a copy of
each record's metadata), the metric, the consistency level every call asks for, the index
settings each index type gets by default, and the check that an existing collection was made
this way. Collections made before the metadata field existed have only the first two fields;
they keep working, without filtering by metadata on the server.
"""

from __future__ import annotations

from typing import Any

from multimodal_rag.errors import BackendError, DimensionMismatchError

__all__ = [
    "CONSISTENCY",
    "DEFAULT_INDEX_PARAMS",
    "DEFAULT_SEARCH_PARAMS",
    "ID_FIELD",
    "MAX_ID_BYTES",
    "METADATA_FIELD",
    "METRIC",
    "VECTOR_FIELD",
    "check_collection",
    "create_collection",
]

ID_FIELD = "id"
VECTOR_FIELD = "vector"
# Holds filters.milvus_document() of each record's metadata, which filter expressions read.
METADATA_FIELD = "metadata"
METRIC = "IP"  # inner product is the cosine for the normalised vectors embedders return
CONSISTENCY = "Strong"
# Milvus's longest VARCHAR.
MAX_ID_BYTES = 65_535

DEFAULT_INDEX_PARAMS: dict[str, dict[str, Any]] = {
    "HNSW": {"M": 16, "efConstruction": 200},
    "HNSW_SQ": {"M": 16, "efConstruction": 200, "sq_type": "SQ8"},
    "IVF_FLAT": {"nlist": 128},
    "IVF_SQ8": {"nlist": 128},
    "IVF_PQ": {"nlist": 128, "m": 8, "nbits": 8},
}
DEFAULT_SEARCH_PARAMS: dict[str, dict[str, Any]] = {
    "HNSW": {"ef": 64},
    "HNSW_SQ": {"ef": 64},
    "IVF_FLAT": {"nprobe": 16},
    "IVF_SQ8": {"nprobe": 16},
    "IVF_PQ": {"nprobe": 16},
}


def create_collection(
    client: Any,
    collection: str,
    *,
    dim: int,
    index_type: str,
    index_params: dict[str, Any],
    timeout: float,
) -> None:
    """Create ``collection`` with this library's schema and its vector index."""
    from pymilvus import DataType, MilvusClient

    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field(ID_FIELD, DataType.VARCHAR, is_primary=True, max_length=MAX_ID_BYTES)
    schema.add_field(VECTOR_FIELD, DataType.FLOAT_VECTOR, dim=dim)
    schema.add_field(METADATA_FIELD, DataType.JSON)
    index = client.prepare_index_params()
    index.add_index(
        field_name=VECTOR_FIELD,
        index_type=index_type,
        metric_type=METRIC,
        params=index_params,
    )
    client.create_collection(
        collection,
        schema=schema,
        index_params=index,
        consistency_level=CONSISTENCY,
        timeout=timeout,
    )


def check_collection(client: Any, collection: str, *, dim: int, uri: str, timeout: float) -> bool:
    """Refuse an existing collection with another schema, dimension or metric.

    Returns:
        Whether it has the JSON field for the metadata copy (a collection made by an earlier
        version of this library has not).

    Raises:
        DimensionMismatchError: It holds vectors of another dimension than ``dim``.
        BackendError: It has another schema or metric.
    """
    where = f"collection {collection!r} on Milvus at {uri}"
    info = client.describe_collection(collection, timeout=timeout)
    fields = {field["name"]: field for field in info.get("fields", [])}
    id_field, vector_field = fields.get(ID_FIELD), fields.get(VECTOR_FIELD)
    from pymilvus import DataType

    if (
        id_field is None
        or vector_field is None
        or not id_field.get("is_primary")
        or id_field.get("type") != DataType.VARCHAR
        or vector_field.get("type") != DataType.FLOAT_VECTOR
    ):
        raise BackendError(
            f"{where} was not made by this library: it needs a VARCHAR primary key "
            f"{ID_FIELD!r} and a FLOAT_VECTOR field {VECTOR_FIELD!r}"
        )
    existing_dim = int(vector_field.get("params", {}).get("dim", -1))
    if existing_dim != dim:
        raise DimensionMismatchError(
            f"{where} holds {existing_dim}-d vectors, "
            f"but this store was opened for {dim}-d"
        )
    metrics = {
        client.describe_index(collection, name, timeout=timeout).get("metric_type")
        for name in client.list_indexes(collection, field_name=VECTOR_FIELD, timeout=timeout)
    }
    if metrics != {METRIC}:
        found = ", ".join(sorted(str(m) for m in metrics)) or "no index"
        raise BackendError(
            f"{where} is indexed with metric {found}; this store needs metric {METRIC}"
        )
    metadata_field = fields.get(METADATA_FIELD)
    return metadata_field is not None and metadata_field.get("type") == DataType.JSON
