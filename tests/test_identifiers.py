"""Identifier forms, look-alikes and scores (`multimodal_rag.descriptions.identifiers`), and the
PostgreSQL store's identifier columns: added to a table made before them, and the whole-word
fallback without pg_trgm."""

from __future__ import annotations

from unittest import mock

import pytest

from conftest import on_server, server_uri
from multimodal_rag.descriptions.identifiers import (
    CONFUSED,
    CONFUSED_PART,
    DIGITS,
    EXACT,
    PART,
    identifier_score,
    identifier_text,
    look_alike,
    query_identifiers,
    spellings,
)
from multimodal_rag.types import Record


def test_forms_fold_case_drop_separators_join_short_prefixes_and_cut_digit_runs() -> None:
    forms, likes = identifier_text(["Lamp XG-2047, 12V", "model xg 2047 / ۲۰۴۷"])
    assert forms.split() == ["xg2047", "2047", "12v"]
    assert likes.split() == ["xg2047", "2047", "12v"]
    assert identifier_text(["no numbers here", None]) == ("", "")
    assert [q.form for q in query_identifiers("XG-2047 xg 2047 XG2047 Xg_2047 2047 47")] == [
        "xg2047",
        "2047",
    ]


def test_look_alikes_write_the_letters_ocr_takes_for_digits_in_mixed_forms_only() -> None:
    assert look_alike("xg2o47") == "xg2047"
    assert look_alike("s1b-il0".replace("-", "")) == "518110"
    assert look_alike("boss") == "boss"  # no digit: a word, not an identifier
    assert look_alike("2047") == "2047"


def test_scores_rank_exact_above_part_above_confusion_and_digits() -> None:
    query = query_identifiers("XG-2047")
    assert identifier_score(query, ["xg2047", "2047"]) == (EXACT, ["xg2047"])
    assert identifier_score(query, ["xg2o47"]) == (CONFUSED, ["xg2o47"])
    assert identifier_score(query, ["xg2047b"]) == (PART, ["xg2047b"])
    assert identifier_score(query, ["ab2047", "2047"]) == (DIGITS, ["2047"])
    assert identifier_score(query, ["xg2o47b"]) == (CONFUSED_PART, ["xg2o47b"])
    assert identifier_score(query, ["qt5512"]) == (0.0, [])
    assert EXACT > CONFUSED > PART > DIGITS > CONFUSED_PART > 0


def test_spellings_give_the_words_as_the_text_writes_them() -> None:
    text = "Lamp (XG-2047), 220V"
    assert spellings(["xg2047", "2047", "220v", "zz9"], [text]) == [
        "XG-2047",
        "XG-2047",
        "220V",
        "zz9",
    ]


def _postgres(**options: object):  # type: ignore[no-untyped-def]
    from multimodal_rag.descriptions.postgres import PostgresDescriptionStore

    return PostgresDescriptionStore(server_uri("DATABASE_URL", "PostgreSQL"), **options)  # type: ignore[arg-type]


def test_a_postgres_table_from_before_identifiers_gets_them_when_opened() -> None:
    store = on_server(_postgres())
    store.put(
        [
            Record(id="lamp", description="Desk lamp XG-2047"),
            Record(id="other", description="QT-5512"),
        ]
    )
    psycopg = pytest.importorskip("psycopg")
    table = store.table  # type: ignore[attr-defined]
    with psycopg.connect(store._dsn, password=store._password) as conn:  # type: ignore[attr-defined]
        conn.execute(f'ALTER TABLE "{table}" DROP COLUMN identifiers, DROP COLUMN identifiers_like')
    reopened = _postgres(table=table, create=False)
    try:
        assert [(id_, forms) for id_, _, forms in reopened.search_identifiers("xg 2047", 5)] == [
            ("lamp", ["2047", "xg2047"])
        ]
        # A part of a form, by trigrams.
        assert [id_ for id_, _, _ in reopened.search_identifiers("XG-20", 5)] == ["lamp"]
    finally:
        reopened.close()


def test_postgres_without_pg_trgm_matches_whole_identifiers_only() -> None:
    with mock.patch(
        "multimodal_rag.descriptions.postgres_identifiers.trigrams_available", return_value=False
    ):
        store = on_server(_postgres())
    store.put([Record(id="lamp", description="Desk lamp XG-2047")])
    for query in ("XG2047", "xg 2047", "2047", "XG-2O47"):
        assert [id_ for id_, _, _ in store.search_identifiers(query, 5)] == ["lamp"]
    assert store.search_identifiers("XG-20", 5) == []  # no part of a form without trigrams
