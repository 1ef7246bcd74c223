"""Descriptions in PostgreSQL: one table per knowledge base, shared by every application server.

Records come back exactly as they were put, as from the embedded stores. PostgreSQL
text cannot hold the NUL character, so a string that contains one (or starts with
the marker U+FFFF) is stored escaped behind that marker; every other value is
stored as it is, readable by other SQL clients. Metadata is kept twice: as exact
JSON text (``metadata_json``: key order, ``1`` versus ``1.0``), which is what the
store reads, and as JSONB (``metadata``) for SQL queries and indexes.

Like [`MilvusVectorStore`][multimodal_rag.vectors.milvus.MilvusVectorStore], the data lives on the server:
each call commits its own transaction, every process sees it as soon as the call
returns, and [`PostgresDescriptionStore.save`][multimodal_rag.descriptions.postgres.PostgresDescriptionStore.save] writes only a small marker
naming the table. Every statement is parameterised; the table name is checked and
quoted as an identifier.

Full-text search runs on PostgreSQL's own: a generated ``tsvector`` column
(``search_vector``) with a GIN index, made with the table, or added to a table made
before it existed when the store opens it. It reads ``search_text``, the text fields and
the read text as the index sees them (``indexed_text``: Persian and Arabic letter forms,
digits, ZWNJ and marks normalised), which ``put`` writes beside the record; a row another
SQL client wrote without it is indexed from its raw fields. A comment on ``search_vector``
records which fields, text search configuration and normalisation it was made with, so a
store opened with other settings, or a table an earlier version made, has ``search_text``
computed anew for every row and the column made anew (nothing is embedded again).

Identifiers (model numbers) have columns and an index of their own
(`multimodal_rag.descriptions.postgres_identifiers`): a trigram index with ``pg_trgm``, whole
identifiers only without it.
"""

from __future__ import annotations

import json
import os
import re
import weakref
from collections.abc import Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, overload

from multimodal_rag._extras import require
from multimodal_rag._remote import (
    fresh_name,
    may_send_credentials,
    valid_name,
    withheld_hint,
)
from multimodal_rag._text_normalisation import NORMALISATION_VERSION
from multimodal_rag._validation import check_int, check_record, check_timeout
from multimodal_rag.descriptions.full_text import (
    COLUMNS,
    DEFAULT_TEXT_FIELDS,
    check_text_fields,
    indexed_ocr_text,
    indexed_text,
    ocr_text,
    query_terms,
)
from multimodal_rag.descriptions.identifiers import identifier_text
from multimodal_rag.errors import (
    BackendConnectionError,
    BackendError,
    InvalidInputError,
    NotFoundError,
)
from multimodal_rag.protocols import DescriptionStore
from multimodal_rag.types import Record

if TYPE_CHECKING:
    from multimodal_rag.filters import MetadataFilter

__all__ = ["PostgresDescriptionStore"]

#: Environment variable read when no ``dsn`` is passed.
DSN_ENV = "DATABASE_URL"

# A password file that cannot exist (a path under a device file): libpq then reads none.
_NO_PASSFILE = os.path.join(os.devnull, "no-password-file")

_MARKER_FILE = "postgres.json"
_COLUMNS = "id, image_path, description, metadata_json, ocr"
# What records are read from in a table made before the read text, which this user may not alter.
_COLUMNS_BEFORE_OCR = "id, image_path, description, metadata_json, NULL"
_PAGE = 1_000  # rows per round trip when iterating
_ID_CHUNK = 10_000  # ids per "= ANY(%s)" array
_NUL_JSON = "\\u0000"  # how metadata_json (ASCII JSON) writes NUL
_SCHEMA = """
CREATE TABLE IF NOT EXISTS {table} (
    id TEXT PRIMARY KEY,
    image_path TEXT,
    description TEXT,
    metadata JSONB NOT NULL DEFAULT '{{}}'::jsonb,
    metadata_json TEXT NOT NULL DEFAULT '{{}}',
    ocr TEXT,
    ocr_text TEXT,
    search_text TEXT,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    {search_column}
)
"""
# Generated from the row, so that it follows every write; from the raw fields where a writer
# (another SQL client) left search_text out.
_SEARCH_COLUMN = (
    "search_vector tsvector GENERATED ALWAYS AS "
    "(to_tsvector({config}::regconfig, coalesce(search_text, {text}))) STORED"
)
_UPSERT = """
INSERT INTO {table} (id, image_path, description, metadata, metadata_json, ocr, ocr_text{search}{identifiers})
VALUES (%s, %s, %s, %s, %s, %s, %s{search_value}{identifier_values})
ON CONFLICT (id) DO UPDATE SET
    image_path = EXCLUDED.image_path,
    description = EXCLUDED.description,
    metadata = EXCLUDED.metadata,
    metadata_json = EXCLUDED.metadata_json,
    ocr = EXCLUDED.ocr,
    ocr_text = EXCLUDED.ocr_text,{search_update}{identifier_update}
    updated_at = now()
"""


class PostgresDescriptionStore(DescriptionStore):
    """Records in a PostgreSQL table, through a pool of psycopg 3 connections.

    The table (``id`` primary key, ``image_path``, ``description``, ``metadata`` as
    JSONB, ``metadata_json`` as exact JSON text, ``created_at``, ``updated_at`` and the
    full-text ``search_vector``) is created on first use.

    Args:
        dsn: A libpq connection string or URL (``postgresql://user:pw@host:5432/db``);
            defaults to ``$DATABASE_URL``. Its password is used but never saved.
        table: Table name; a fresh ``mrag_descriptions_...`` name by default.
        password: The password, when the DSN has none. Otherwise it is taken from
            ``$DATABASE_URL`` when that names the same server, database and user,
            and finally from libpq's own ``$PGPASSWORD``, ``~/.pgpass`` or service
            file. When a knowledge base's manifest names the server, those are used
            only for a server that ``$DATABASE_URL`` names or the caller allowed with
            ``MultimodalRAG.open(..., allow_endpoints=[...])``; any other is reached
            without a password.
        max_connections: Size of the connection pool.
        timeout: Seconds to wait for a connection (connecting, or a free one in the pool).
        create: Create the table when it does not exist; with ``False`` a missing
            table is an error (how [`load`][multimodal_rag.descriptions.postgres.PostgresDescriptionStore.load] reconnects).
        text_fields: What full-text search reads: ``"description"``, ``"image_path"``
            and metadata keys, as for [`SQLiteDescriptionStore`][multimodal_rag.descriptions.sqlite.SQLiteDescriptionStore].
        text_search_config: The PostgreSQL text search configuration that cuts text
            into words: ``"simple"`` (words between spaces and punctuation, lower-cased,
            any language) or a language's own, such as ``"english"`` (stems, stop words).

    Raises:
        InvalidInputError: No DSN, or a bad table name or setting (an unknown text
            search configuration among them).
        BackendConnectionError: The server cannot be reached or refuses the credentials.
        BackendError: The table is missing (with ``create=False``) or unusable.
    """

    kind: ClassVar[str] = "postgres"
    full_text: ClassVar[bool] = True
    identifier_search: ClassVar[bool] = True

    def __init__(
        self,
        dsn: str | None = None,
        *,
        table: str | None = None,
        password: str | None = None,
        max_connections: int = 4,
        timeout: float = 30.0,
        create: bool = True,
        text_fields: Sequence[str] = DEFAULT_TEXT_FIELDS,
        text_search_config: str = "simple",
    ) -> None:
        dsn = dsn if dsn is not None else os.environ.get(DSN_ENV)
        if not dsn:
            raise InvalidInputError(f"no PostgreSQL DSN: pass dsn= or set ${DSN_ENV}")
        max_connections = check_int("max_connections", max_connections)
        timeout = check_timeout(timeout)
        self._text_fields = check_text_fields(text_fields)
        if not isinstance(text_search_config, str) or not text_search_config.strip():
            raise InvalidInputError(
                f"text_search_config must name a PostgreSQL text search configuration, got {text_search_config!r}"
            )
        self._text_search_config = text_search_config
        # Why search_text cannot run, when the table lacks its column and we may not add it.
        self._no_full_text = ""
        # Whether the table has the read-text columns (one made before them, by an owner who
        # has not opened it since, may lack them: then records are read without it).
        self._has_ocr = True
        # Whether the table has search_text (one made before it, by an owner who has not opened
        # it since, may lack it: then records are written without it, indexed from their raw text).
        self._has_search_text = True
        # The identifier index: True trigrams (pg_trgm), False whole forms, None no columns
        # (and why, when this user may not add them).
        self._identifiers: bool | None = None
        self._no_identifiers = ""
        psycopg = require("psycopg", user="PostgresDescriptionStore", extra="postgres")
        pool_module = require("psycopg_pool", user="PostgresDescriptionStore", extra="postgres")
        from psycopg import sql

        try:
            params = psycopg.conninfo.conninfo_to_dict(dsn)
        except psycopg.ProgrammingError as exc:
            raise InvalidInputError(f"cannot parse the PostgreSQL DSN: {exc}") from None
        explicit = password or params.pop("password", None)
        params.pop("password", None)
        # A DSN without a host leaves the server to the environment ($PGHOST, the local
        # socket), as the caller's own settings do.
        trusted = not (params.get("host") or params.get("hostaddr")) or may_send_credentials(
            params, env=os.environ.get(DSN_ENV), same=_same_server
        )
        self._password = explicit or (_password_from_env(params) if trusted else None)
        # A server only a manifest names gets no password meant for the caller's servers.
        withhold = not explicit and not trusted
        self._params = {key: str(value) for key, value in params.items()}
        self._dsn = psycopg.conninfo.make_conninfo(**self._params)
        self._table_name = (
            valid_name(table, what="table") if table else fresh_name("mrag_descriptions")
        )
        self._table = sql.Identifier(self._table_name)
        self._max_connections = max_connections
        self._timeout = float(timeout)
        connect_args: dict[str, Any] = {"connect_timeout": max(1, round(self._timeout))}
        if self._password:
            connect_args["password"] = self._password
        elif withhold:
            # libpq fills a missing password from $PGPASSWORD, the password file or a
            # service file by itself; an empty one and a password file that does not
            # exist leave it nothing to send.
            connect_args["password"] = ""
            connect_args["passfile"] = _NO_PASSFILE
        self._hint = (
            withheld_hint(self.where, f"${DSN_ENV}'s, $PGPASSWORD's and ~/.pgpass's passwords")
            if withhold
            else ""
        )

        # One direct connection first: it reports the server's own reason (refused,
        # bad password, unknown database) where a pool would only time out.
        with self._calls("connect"), psycopg.connect(self._dsn, **connect_args) as conn:
            self._prepare_table(conn, create=create)
            self._prepare_identifiers(conn)
        with self._calls("open a connection pool"):
            self._pool = pool_module.ConnectionPool(
                self._dsn,
                kwargs=connect_args,
                min_size=1,
                max_size=max_connections,
                timeout=self._timeout,
                open=False,
            )
            self._pool.open(wait=True, timeout=self._timeout)
        self._finalizer = weakref.finalize(self, self._pool.close)

    def _prepare_table(self, conn: Any, *, create: bool) -> None:
        from psycopg import sql

        exists = self._table_exists(conn)
        if not exists and create:
            self._lock_setup(conn)
            exists = self._table_exists(conn)  # made by another process while we waited
            if not exists:
                self._check_text_search_config(conn)
                conn.execute(
                    sql.SQL(_SCHEMA).format(table=self._table, search_column=self._search_column())
                )
                self._finish_search_column(conn)
                return
        if not exists:
            raise BackendError(
                f"PostgreSQL at {self.where} has no table {self._table_name!r}; "
                "it was dropped or the knowledge base points at another database"
            )
        columns = {
            row[0]
            for row in conn.execute(
                "SELECT column_name FROM information_schema.columns "
                "WHERE table_name = %s AND table_schema = current_schema()",
                (self._table_name,),
            )
        }
        missing = {"id", "image_path", "description", "metadata", "metadata_json"} - columns
        if missing:
            raise BackendError(
                f"table {self._table_name!r} on PostgreSQL at {self.where} was not made by this "
                f"library: it lacks column(s) {sorted(missing)}"
            )
        self._check_text_search_config(conn)
        self._has_ocr = {"ocr", "ocr_text"} <= columns
        self._has_search_text = "search_text" in columns
        if self._search_column_is_current(conn):
            return
        # A table made before full-text search, or with other settings: (re)make the column.
        # The table is locked for the time it takes to compute it for every row.
        import psycopg

        try:
            with conn.transaction():  # a savepoint: a refusal leaves the connection usable
                self._lock_setup(conn)
                if self._search_column_is_current(conn):
                    self._has_ocr = self._has_search_text = True
                    return  # another process made it while we waited
                # Tables made before the read text was kept get its columns first: the
                # full-text column reads one of them.
                conn.execute(
                    sql.SQL(
                        "ALTER TABLE {table} ADD COLUMN IF NOT EXISTS ocr TEXT, ADD COLUMN IF NOT EXISTS ocr_text TEXT"
                    ).format(table=self._table)
                )
                self._has_ocr = True
                conn.execute(
                    sql.SQL("ALTER TABLE {table} DROP COLUMN IF EXISTS search_vector").format(
                        table=self._table
                    )
                )
                self._fill_search_text(conn)
                self._has_search_text = True
                conn.execute(
                    sql.SQL("ALTER TABLE {table} ADD COLUMN {search_column}").format(
                        table=self._table, search_column=self._search_column()
                    )
                )
                self._finish_search_column(conn)
        except psycopg.errors.InsufficientPrivilege as exc:
            self._has_ocr = {"ocr", "ocr_text"} <= columns
            self._has_search_text = "search_text" in columns
            # Reading and writing records needs no full-text column: only search_text does.
            self._no_full_text = (
                f"table {self._table_name!r} on PostgreSQL at {self.where} has no full-text column "
                f"for these settings, and this user may not add it ({self._scrub(exc)}); its owner "
                "can add it by opening the store once"
            )

    def _search_text(self, record: Record) -> str:
        """The record's text fields and read text as the index sees them, one string."""
        texts = [*(indexed_text(record, field) for field in self._text_fields), indexed_ocr_text(record)]
        return " ".join(text for text in texts if text)

    def _fill_search_text(self, conn: Any) -> None:
        """Add ``search_text`` where it is missing and compute it for every row (in this
        transaction): an earlier version's table, or other text fields or normalisation."""
        from psycopg import sql

        conn.execute(
            sql.SQL("ALTER TABLE {table} ADD COLUMN IF NOT EXISTS search_text TEXT").format(table=self._table)
        )
        update = sql.SQL("UPDATE {table} SET search_text = %s WHERE id = %s").format(table=self._table)
        last: str | None = None
        while True:
            if last is None:
                rows = conn.execute(self._select("ORDER BY id LIMIT %s"), (_PAGE,)).fetchall()
            else:
                rows = conn.execute(self._select("WHERE id > %s ORDER BY id LIMIT %s"), (last, _PAGE)).fetchall()
            with conn.cursor() as cursor:
                cursor.executemany(update, [(self._search_text(self._record(row)), row[0]) for row in rows])
            if len(rows) < _PAGE:
                return
            last = rows[-1][0]

    def _prepare_identifiers(self, conn: Any) -> None:
        """Give the table its identifier columns and index, and fill them in rows that lack them,
        when this user may; otherwise identifier search is unavailable (`_no_identifiers`)."""
        import psycopg
        from psycopg import sql

        from multimodal_rag.descriptions.postgres_identifiers import (
            add_identifier_columns,
            fill_identifiers,
            index_kind,
        )

        kind = index_kind(conn, self._qualified_name(conn))
        if kind is not None and not conn.execute(
            sql.SQL("SELECT EXISTS (SELECT 1 FROM {table} WHERE identifiers IS NULL)").format(table=self._table)
        ).fetchone()[0]:
            self._identifiers = kind
            return
        try:
            if not self._has_ocr:
                raise psycopg.errors.InsufficientPrivilege("the table has no columns for read text")
            with conn.transaction():
                self._lock_setup(conn)
                kind = index_kind(conn, self._qualified_name(conn))
                if kind is None:
                    kind = add_identifier_columns(conn, self._table)
                fill_identifiers(conn, self._table, _decode)
            self._identifiers = kind
        except psycopg.errors.InsufficientPrivilege as exc:
            self._identifiers = kind
            if kind is None:
                self._no_identifiers = (
                    f"table {self._table_name!r} on PostgreSQL at {self.where} has no identifier columns, and this "
                    f"user may not add them ({self._scrub(exc)}); its owner adds them by opening the store once"
                )

    def _table_exists(self, conn: Any) -> bool:
        return bool(
            conn.execute("SELECT to_regclass(%s) IS NOT NULL", (self._qualified_name(conn),)).fetchone()[0]
        )

    def _lock_setup(self, conn: Any) -> None:
        """Wait for any other process making this table or its column, until this transaction ends."""
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"multimodal_rag:{self._table_name}",))

    def _text_settings(self) -> str:
        return json.dumps(
            {
                "text_fields": list(self._text_fields),
                "text_search_config": self._text_search_config,
                "ocr": True,
                "normalisation": NORMALISATION_VERSION,
            }
        )

    def _search_column(self) -> Any:
        from psycopg import sql

        parts: list[Any] = [
            sql.SQL("coalesce({}, '')").format(
                sql.Identifier(field)
                if field in COLUMNS
                else sql.SQL("metadata ->> {}").format(sql.Literal(field))
            )
            for field in self._text_fields
        ]
        parts.append(sql.SQL("coalesce(ocr_text, '')"))  # the text read in the image
        return sql.SQL(_SEARCH_COLUMN).format(
            config=sql.Literal(self._text_search_config), text=sql.SQL(" || ' ' || ").join(parts)
        )

    def _finish_search_column(self, conn: Any) -> None:
        """Index the new column and record the settings it was made with."""
        from psycopg import sql

        conn.execute(sql.SQL("CREATE INDEX ON {table} USING gin (search_vector)").format(table=self._table))
        conn.execute(
            sql.SQL("COMMENT ON COLUMN {table}.search_vector IS {settings}").format(
                table=self._table, settings=sql.Literal(self._text_settings())
            )
        )

    def _search_column_is_current(self, conn: Any) -> bool:
        row = conn.execute(
            "SELECT col_description(a.attrelid, a.attnum), EXISTS ("
            "  SELECT 1 FROM pg_index AS i WHERE i.indrelid = a.attrelid AND a.attnum = ANY(i.indkey))"
            " FROM pg_attribute AS a"
            " WHERE a.attrelid = to_regclass(%s) AND a.attname = 'search_vector' AND NOT a.attisdropped",
            (self._qualified_name(conn),),
        ).fetchone()
        return row is not None and row[0] == self._text_settings() and bool(row[1])

    def _check_text_search_config(self, conn: Any) -> None:
        import psycopg

        try:
            with conn.transaction():
                conn.execute("SELECT %s::regconfig", (self._text_search_config,))
        except psycopg.errors.UndefinedObject:
            raise InvalidInputError(
                f"PostgreSQL at {self.where} has no text search configuration "
                f"{self._text_search_config!r} (see its pg_ts_config table)"
            ) from None

    def _qualified_name(self, conn: Any) -> str:
        from psycopg import sql

        return sql.Identifier(self._table_name).as_string(conn)

    @property
    def where(self) -> str:
        """The server and database, without credentials, for messages."""
        p = self._params
        user = f"{p['user']}@" if "user" in p else ""
        host = p.get("host") or p.get("hostaddr") or "localhost"
        port = f":{p['port']}" if "port" in p else ""
        return f"postgresql://{user}{host}{port}/{p.get('dbname', '')}"

    @property
    def table(self) -> str:
        """The table holding this store's records."""
        return self._table_name

    def config(self) -> dict[str, Any]:
        return {
            "dsn": self._dsn,
            "table": self._table_name,
            "max_connections": self._max_connections,
            "timeout": self._timeout,
            "text_fields": list(self._text_fields),
            "text_search_config": self._text_search_config,
        }

    @contextmanager
    def _calls(self, action: str) -> Iterator[None]:
        """Turn psycopg failures into the library's errors: the server named, the password not."""
        import psycopg
        import psycopg_pool

        try:
            yield
        except (psycopg.OperationalError, psycopg_pool.PoolTimeout) as exc:
            message = self._scrub(exc)
            if "password" in message.lower() or "authentication" in message.lower():
                raise BackendConnectionError(
                    f"PostgreSQL at {self.where} refused the credentials "
                    f"(could not {action}): {message}{self._hint}"
                ) from None
            raise BackendConnectionError(
                f"cannot reach PostgreSQL at {self.where} (could not {action}): {message}"
            ) from None
        except psycopg.Error as exc:
            raise BackendError(
                f"PostgreSQL at {self.where} could not {action}: {self._scrub(exc)}"
            ) from None

    def _scrub(self, exc: BaseException) -> str:
        message = str(exc).strip() or type(exc).__name__
        return message.replace(self._password, "***") if self._password else message

    @contextmanager
    def _connection(self, action: str) -> Iterator[Any]:
        # The pool commits when the block succeeds and rolls back when it raises.
        with self._calls(action), self._pool.connection() as conn:
            yield conn

    # -- reads -------------------------------------------------------------------

    def _select(self, where: str) -> Any:
        from psycopg import sql

        columns = _COLUMNS if self._has_ocr else _COLUMNS_BEFORE_OCR
        return sql.SQL(f"SELECT {columns} FROM {{table}} {where}").format(table=self._table)

    @staticmethod
    def _record(row: tuple[Any, ...]) -> Record:
        read = None
        if row[4] is not None:
            from multimodal_rag.ocr import ReadText

            read = ReadText.from_json(json.loads(row[4]))
        return Record(
            id=_decode(row[0]),
            image_path=_decode(row[1]),
            description=_decode(row[2]),
            metadata=json.loads(row[3]),
            ocr=read,
        )

    def get(self, id: str) -> Record:
        with self._connection("read a record") as conn:
            row = conn.execute(self._select("WHERE id = %s"), (_encode(id),)).fetchone()
        if row is None:
            raise NotFoundError(f"no description record with id {id!r}")
        return self._record(row)

    def get_many(self, ids: Sequence[str]) -> dict[str, Record]:
        wanted = [_encode(i) for i in dict.fromkeys(ids) if isinstance(i, str)]
        out: dict[str, Record] = {}
        with self._connection("read records") as conn:
            for start in range(0, len(wanted), _ID_CHUNK):
                rows = conn.execute(
                    self._select("WHERE id = ANY(%s)"), (wanted[start : start + _ID_CHUNK],)
                )
                out.update((record.id, record) for record in map(self._record, rows))
        return out

    def __iter__(self) -> Iterator[Record]:
        # Page by key so that no connection is held while the caller works on a page.
        last: str | None = None
        while True:
            with self._connection("read records") as conn:
                if last is None:
                    rows = conn.execute(self._select("ORDER BY id LIMIT %s"), (_PAGE,)).fetchall()
                else:
                    rows = conn.execute(
                        self._select("WHERE id > %s ORDER BY id LIMIT %s"), (last, _PAGE)
                    ).fetchall()
            yield from (self._record(row) for row in rows)
            if len(rows) < _PAGE:
                return
            last = rows[-1][0]

    def search_text(self, query: str, k: int, *, ids: Collection[str] | None = None) -> list[tuple[str, float]]:
        """Ranked by ``ts_rank_cd`` (cover density, divided by 1 + the log of the text's length); ties by id.

        Each term of the query goes through ``plainto_tsquery``, so nothing in it is
        query syntax, and the terms are joined by OR.

        Raises:
            BackendError: The table has no full-text column and this user may not add it.
        """
        from psycopg import sql

        k = check_int("k", k)
        if self._no_full_text:
            raise BackendError(self._no_full_text)
        # A term without a letter or digit has no lexeme in any configuration.
        terms = [term for term in query_terms(query) if any(c.isalnum() for c in term)]
        if not terms:
            return []
        config = sql.Literal(self._text_search_config)
        tsquery = sql.SQL(" || ").join(
            sql.SQL("plainto_tsquery({}::regconfig, %s)").format(config) for _ in terms
        )
        params: list[Any] = [*terms]
        restrict = sql.SQL("")
        if ids is not None:
            wanted = [_encode(i) for i in dict.fromkeys(ids) if isinstance(i, str)]
            if not wanted:
                return []
            restrict = sql.SQL("AND id = ANY(%s)")
            params.append(wanted)
        params.append(k)
        statement = sql.SQL(
            "SELECT id, ts_rank_cd(search_vector, q, 1) AS score FROM {table}, ({tsquery}) AS query (q) "
            "WHERE search_vector @@ q {restrict} ORDER BY score DESC, id LIMIT %s"
        ).format(table=self._table, tsquery=sql.SQL("SELECT ") + tsquery, restrict=restrict)
        with self._connection("search the descriptions") as conn:
            rows = conn.execute(statement, params).fetchall()
        return [(_decode(row[0]), float(row[1])) for row in rows]

    def search_identifiers(
        self, query: str, k: int, *, ids: Collection[str] | None = None
    ) -> list[tuple[str, float, list[str]]]:
        """Candidates from the identifier index (forms found inside longer ones with ``pg_trgm``,
        whole forms without it), ranked by `identifier_score`.

        Raises:
            BackendError: The table has no identifier columns and this user may not add them.
        """
        from multimodal_rag.descriptions.identifiers import query_identifiers, rank_candidates
        from multimodal_rag.descriptions.postgres_identifiers import identifier_candidates

        k = check_int("k", k)
        if self._identifiers is None:
            raise BackendError(self._no_identifiers or f"table {self._table_name!r} has no identifier columns")
        identifiers = query_identifiers(query)
        if not identifiers:
            return []
        statement, params = identifier_candidates(
            identifiers, table=self._table, trigram=self._identifiers, restrict=ids is not None, limit=max(200, 8 * k)
        )
        if ids is not None:
            wanted = [_encode(i) for i in dict.fromkeys(ids) if isinstance(i, str)]
            if not wanted:
                return []
            params.append(wanted)
        with self._connection("search the identifiers") as conn:
            rows = conn.execute(statement, params).fetchall()
        return rank_candidates(identifiers, ((_decode(id_), text or "") for id_, text, _ in rows), k)

    def __len__(self) -> int:
        from psycopg import sql

        with self._connection("count records") as conn:
            return int(
                conn.execute(
                    sql.SQL("SELECT count(*) FROM {table}").format(table=self._table)
                ).fetchone()[0]
            )

    def __contains__(self, id: object) -> bool:
        if not isinstance(id, str):
            return False
        from psycopg import sql

        with self._connection("look up a record") as conn:
            query = sql.SQL("SELECT 1 FROM {table} WHERE id = %s").format(table=self._table)
            return conn.execute(query, (_encode(id),)).fetchone() is not None

    def matching_ids(self, filter: MetadataFilter) -> set[str]:
        """One query, the filter in SQL on the JSONB copy ([`MetadataFilter.to_postgres`][multimodal_rag.filters.MetadataFilter.to_postgres]).

        That copy holds U+FFFD where the metadata holds NUL, so a record whose metadata
        holds one is tested in Python on its exact copy, and so is every record for a
        filter that holds one.
        """
        from psycopg import sql

        if filter.contains_nul:
            return super().matching_ids(filter)
        where, params = filter.to_postgres("metadata")
        query = sql.SQL(
            "SELECT id, CASE WHEN strpos(metadata_json, %s) > 0 THEN metadata_json END FROM {table} "
            "WHERE strpos(metadata_json, %s) > 0 OR ({where})"
        ).format(table=self._table, where=where)
        with self._connection("filter records") as conn:
            rows = conn.execute(query, [_NUL_JSON, _NUL_JSON, *params]).fetchall()
        return {_decode(id_) for id_, raw in rows if raw is None or filter.matches(json.loads(raw))}

    # -- writes ------------------------------------------------------------------

    def put(self, records: Iterable[Record]) -> None:
        """Insert or replace records in one transaction: all of them are stored, or none."""
        from psycopg import sql
        from psycopg.types.json import Jsonb

        rows = []
        for record in records:
            check_record(record)
            if record.ocr is not None and not self._has_ocr:
                raise BackendError(
                    f"table {self._table_name!r} on PostgreSQL at {self.where} has no columns for the text "
                    "read in images, and this user may not add them; its owner adds them by opening the store once"
                )
            rows.append(
                (
                    _encode(record.id),
                    _encode(record.image_path),
                    _encode(record.description),
                    Jsonb(_without_nul(record.metadata)),
                    # ASCII escapes keep NUL out of the text and every value exact.
                    json.dumps(record.metadata, ensure_ascii=True, allow_nan=False),
                    None if record.ocr is None else json.dumps(record.ocr.to_json(), ensure_ascii=True),
                    _encode(ocr_text(record)),
                    *([self._search_text(record)] if self._has_search_text else []),
                    *(identifier_text([record.description, ocr_text(record)]) if self._identifiers is not None else ()),
                )
            )
        if not rows:
            return
        search = self._has_search_text
        identifiers = self._identifiers is not None
        upsert = sql.SQL(_UPSERT).format(
            table=self._table,
            search=sql.SQL(", search_text" if search else ""),
            search_value=sql.SQL(", %s" if search else ""),
            search_update=sql.SQL("\n    search_text = EXCLUDED.search_text," if search else ""),
            identifiers=sql.SQL(", identifiers, identifiers_like" if identifiers else ""),
            identifier_values=sql.SQL(", %s, %s" if identifiers else ""),
            identifier_update=sql.SQL(
                "\n    identifiers = EXCLUDED.identifiers, identifiers_like = EXCLUDED.identifiers_like,"
                if identifiers
                else ""
            ),
        )
        with self._connection("store records") as conn, conn.cursor() as cursor:
            cursor.executemany(upsert, rows)

    def delete(self, ids: Iterable[str]) -> int:
        from psycopg import sql

        if isinstance(ids, str):
            ids = [ids]
        wanted = [_encode(i) for i in dict.fromkeys(ids) if isinstance(i, str)]
        deleted = 0
        with self._connection("delete records") as conn:
            query = sql.SQL("DELETE FROM {table} WHERE id = ANY(%s)").format(table=self._table)
            for start in range(0, len(wanted), _ID_CHUNK):
                deleted += conn.execute(query, (wanted[start : start + _ID_CHUNK],)).rowcount
        return deleted

    def drop(self) -> None:
        """Delete the table and every record in it, on the server."""
        from psycopg import sql

        with self._connection("drop the table") as conn:
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {table}").format(table=self._table))

    def close(self) -> None:
        """Close the pool's connections."""
        self._finalizer()

    # -- persistence -------------------------------------------------------------

    def save(self, directory: Path) -> None:
        """Write a marker naming the database and table; the records stay on the server."""
        marker = {"dsn": self._dsn, "table": self._table_name}
        (Path(directory) / _MARKER_FILE).write_text(
            json.dumps(marker, indent=2) + "\n", encoding="utf-8"
        )

    @classmethod
    def load(cls, directory: Path, **config: Any) -> PostgresDescriptionStore:
        """Reconnect to the table named in ``config`` (the manifest's copy).

        The password comes as for the constructor; when
        [`MultimodalRAG.open`][multimodal_rag._rag.MultimodalRAG.open] loads a manifest, only
        for a server that ``$DATABASE_URL`` names or the caller allowed.

        Raises:
            BackendError: The table no longer exists in that database.
        """
        return cls(create=False, **config)

    def __repr__(self) -> str:
        return f"PostgresDescriptionStore({self.where!r}, table={self._table_name!r})"


def _password_from_env(params: dict[str, Any]) -> str | None:
    """The password of ``$DATABASE_URL`` when it names the same server, database and user."""
    env = os.environ.get(DSN_ENV)
    if not env:
        return None
    from psycopg.conninfo import conninfo_to_dict

    try:
        other = conninfo_to_dict(env)
    except Exception:  # a malformed variable is simply not a source of passwords
        return None
    same = all(
        str(other.get(key)) == str(params.get(key)) for key in ("host", "port", "dbname", "user")
    )
    password = other.get("password")  # a string, as every value parsed from a DSN
    return password if same and isinstance(password, str) else None


def _same_server(params: dict[str, Any], other: str) -> bool:
    """Whether conninfo ``params`` and the DSN ``other`` name one server: host, hostaddr, port."""
    from psycopg.conninfo import conninfo_to_dict

    try:
        theirs = conninfo_to_dict(other)
    except Exception:  # not a PostgreSQL address (a Milvus URL, say): not this server
        return False
    return _server(params) == _server(theirs)


def _server(params: dict[str, Any]) -> tuple[str, str, str]:
    default_port = os.environ.get("PGPORT") or "5432"
    return (
        str(params.get("host") or "").lower(),
        str(params.get("hostaddr") or ""),
        str(params.get("port") or default_port),
    )


# Marks a stored string that was escaped; a noncharacter, so real text almost never starts with it.
_MARK = "\uffff"


def _encode(value: str | None) -> str | None:
    """A string PostgreSQL text can hold; unchanged unless it contains NUL or starts with the mark.

    The escaped form starts with the mark and no unescaped value does, so the mapping is
    one-to-one and ids stay unique.
    """
    if value is None or ("\x00" not in value and not value.startswith(_MARK)):
        return value
    return _MARK + value.replace("\\", "\\\\").replace("\x00", "\\0")


@overload
def _decode(value: str) -> str: ...
@overload
def _decode(value: None) -> None: ...
def _decode(value: str | None) -> str | None:
    if value is None or not value.startswith(_MARK):
        return value
    return re.sub(
        r"\\([\\0])", lambda m: "\x00" if m.group(1) == "0" else "\\", value[len(_MARK) :]
    )


def _without_nul(value: Any) -> Any:
    """The JSONB copy of metadata: JSONB cannot hold NUL, so it becomes U+FFFD there."""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, dict):
        return {_without_nul(k): _without_nul(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_nul(v) for v in value]
    return value
