"""Identifier search on PostgreSQL: the columns, their index, and the query.

Each row keeps its identifier forms and their look-alikes (`identifier_text`) in
``identifiers`` and ``identifiers_like``, written by ``put``. With the ``pg_trgm`` extension
(PostgreSQL's contrib package; the store creates it when it may) a trigram GIN index over both
answers ``LIKE '%form%'``, so a query's form is found inside a longer one, as on SQLite.
Without it, a GIN index over the columns' ``simple`` text search vectors finds whole forms
only: "XG-2047", "xg 2047" and "2047" (a digit run is a form of its own) and look-alikes
still match, a part of a form such as "XG-20" does not.

A table made before these columns gets them when a store that may alter it opens it, and
rows without them (that table's rows, or rows another writer put without them) get them
computed from their description and read text then; nothing is embedded again.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from multimodal_rag.descriptions.identifiers import QueryIdentifier, identifier_text, match_terms

__all__ = ["add_identifier_columns", "fill_identifiers", "identifier_candidates"]

_FILL_PAGE = 1_000


def add_identifier_columns(conn: Any, table: Any) -> bool:
    """Add the identifier columns and their index to ``table`` (the caller holds the setup lock,
    in a transaction, and found no index: see `index_kind`); True when the index is a trigram one.

    A comment on ``identifiers`` records which index was made (``trigram`` or ``words``)."""
    from psycopg import sql

    conn.execute(
        sql.SQL(
            "ALTER TABLE {table} ADD COLUMN IF NOT EXISTS identifiers TEXT, "
            "ADD COLUMN IF NOT EXISTS identifiers_like TEXT"
        ).format(table=table)
    )
    trigram = trigrams_available(conn)
    if trigram:
        columns = sql.SQL("identifiers gin_trgm_ops, identifiers_like gin_trgm_ops")
    else:
        columns = sql.SQL(
            "to_tsvector('simple', coalesce(identifiers, '')), "
            "to_tsvector('simple', coalesce(identifiers_like, ''))"
        )
    conn.execute(
        sql.SQL("CREATE INDEX ON {table} USING gin ({columns})").format(
            table=table, columns=columns
        )
    )
    conn.execute(
        sql.SQL("COMMENT ON COLUMN {table}.identifiers IS {kind}").format(
            table=table, kind=sql.Literal("trigram" if trigram else "words")
        )
    )
    return trigram


def trigrams_available(conn: Any) -> bool:
    """Whether ``pg_trgm`` is in the database, creating it when it is installed and this user may."""
    import psycopg

    if conn.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm')"
    ).fetchone()[0]:
        return True
    try:
        # A savepoint: an extension not installed, or not allowed, leaves the fallback.
        with conn.transaction():
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    except psycopg.Error:
        return False
    return True


def index_kind(conn: Any, qualified_name: str) -> bool | None:
    """Which identifier index the table has: True a trigram one, False the fallback, None none."""
    row = conn.execute(
        "SELECT col_description(a.attrelid, a.attnum) FROM pg_attribute AS a"
        " WHERE a.attrelid = to_regclass(%s) AND a.attname = 'identifiers' AND NOT a.attisdropped",
        (qualified_name,),
    ).fetchone()
    kind = row[0] if row is not None else None
    return {"trigram": True, "words": False}.get(kind) if isinstance(kind, str) else None


def fill_identifiers(conn: Any, table: Any, decode: Any) -> int:
    """Compute the identifier columns of rows that lack them; returns how many were filled."""
    from psycopg import sql

    select = sql.SQL(
        "SELECT id, description, ocr_text FROM {table} WHERE identifiers IS NULL ORDER BY id LIMIT %s"
    ).format(table=table)
    update = sql.SQL(
        "UPDATE {table} SET identifiers = %s, identifiers_like = %s WHERE id = %s"
    ).format(table=table)
    filled = 0
    while rows := conn.execute(select, (_FILL_PAGE,)).fetchall():
        with conn.cursor() as cursor:
            cursor.executemany(
                update,
                [
                    (*identifier_text([decode(description), decode(read)]), id_)
                    for id_, description, read in rows
                ],
            )
        filled += len(rows)
    return filled


def identifier_candidates(
    identifiers: Sequence[QueryIdentifier], *, table: Any, trigram: bool, restrict: bool, limit: int
) -> tuple[Any, list[Any]]:
    """The statement (and its parameters but the ids of ``restrict``, appended by the
    caller after these) that finds candidate rows ``(id, identifiers, whole)``: those holding a
    query identifier's form whole come first."""
    from psycopg import sql

    forms, likes = match_terms(identifiers)
    params: list[Any] = [f" {q.form} " for q in identifiers]
    whole = sql.SQL(" + ").join(
        sql.SQL("(position(%s in ' ' || coalesce(identifiers, '') || ' ') > 0)::int")
        for _ in identifiers
    )
    if trigram:
        # One LIKE per term, joined by OR: each can use the trigram index (an array of
        # patterns cannot). Forms hold letters and digits only, nothing LIKE treats specially.
        conditions = [sql.SQL("identifiers LIKE %s") for _ in forms] + [
            sql.SQL("identifiers_like LIKE %s") for _ in likes
        ]
        params += [f"%{term}%" for term in (*forms, *likes)]
        match: Any = sql.SQL(" OR ").join(conditions)
    else:
        match = sql.SQL(
            "to_tsvector('simple', coalesce(identifiers, '')) @@ to_tsquery('simple', %s) "
            "OR to_tsvector('simple', coalesce(identifiers_like, '')) @@ to_tsquery('simple', %s)"
        )
        params += [" | ".join(forms), " | ".join(likes)]
    statement = sql.SQL(
        "SELECT id, identifiers, {whole} AS whole FROM {table} WHERE ({match}) {restrict} "
        "ORDER BY whole DESC, id LIMIT {limit}"
    ).format(
        whole=whole,
        table=table,
        match=match,
        restrict=sql.SQL("AND id = ANY(%s)") if restrict else sql.SQL(""),
        limit=sql.Literal(limit),
    )
    return statement, params
