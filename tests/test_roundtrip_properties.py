"""Property tests: any id, description and metadata comes back exactly, from every store and the journal."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from multimodal_rag._kb.journal import Journal, read_journal
from multimodal_rag._validation import RESERVED_KEYS
from multimodal_rag.types import Record
from test_description_store_contract import DESCRIPTION_STORES

# Text as users write it: every script (Persian, emoji, combining marks, RTL marks), NUL
# bytes and control characters. Lone surrogates are excluded: UTF-8 cannot hold them, and
# check_record refuses them (tested in test_hostile_input).
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=60)
PERSIAN = st.text(st.sampled_from(list("پرندهٔ سبز‌\u200f\u200e🦜👩‍👩‍👧\x00\n\t\"'\\")), min_size=1, max_size=30)
# Ids as check_id accepts them: any script, quotes and spaces, but no control characters,
# path separators or the names "." and "..".
ID_TEXT = st.text(
    st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="/\\"), min_size=1, max_size=60
).filter(lambda text: text not in (".", ".."))
ID_PERSIAN = st.text(st.sampled_from(list("پرندهٔ سبز‌\u200f\u200e🦜👩‍👩‍👧\"'")), min_size=1, max_size=30)
IDS = st.one_of(ID_TEXT, ID_PERSIAN)
JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63),
    st.floats(allow_nan=False, allow_infinity=False),
    TEXT,
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(TEXT, inner, max_size=4)),
    max_leaves=12,
)
METADATA = st.dictionaries(TEXT.filter(lambda key: key not in RESERVED_KEYS), JSON_VALUES, max_size=5)
RECORDS = st.lists(
    st.builds(
        Record,
        id=IDS,
        image_path=st.one_of(st.none(), TEXT, PERSIAN),
        description=st.one_of(st.none(), TEXT, PERSIAN),
        metadata=METADATA,
    ),
    min_size=1,
    max_size=8,
    unique_by=lambda record: record.id,
)
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def same(a: Record, b: Record) -> bool:
    # json.dumps tells 1 from 1.0 and True from 1, which == does not.
    return a == b and json.dumps(a.metadata, sort_keys=True) == json.dumps(b.metadata, sort_keys=True)


@pytest.mark.parametrize("kind", sorted(DESCRIPTION_STORES))
@SETTINGS
@given(records=RECORDS)
def test_records_round_trip_exactly_through_every_store_and_its_files(kind: str, records: list[Record]) -> None:
    store = DESCRIPTION_STORES[kind]()
    store.put(records)
    for record in records:
        assert same(store.get(record.id), record)
    with tempfile.TemporaryDirectory() as tmp:
        store.save(Path(tmp))
        loaded = type(store).load(Path(tmp), **json.loads(json.dumps(store.config())))
    assert len(loaded) == len(records)
    found = loaded.get_many([r.id for r in records])
    for record in records:
        assert same(found[record.id], record)


@SETTINGS
@given(records=RECORDS, removed=st.lists(IDS, max_size=3))
def test_records_and_vectors_round_trip_exactly_through_the_journal(records: list[Record], removed: list[str]) -> None:
    rng = np.random.default_rng(len(records))
    vectors = rng.standard_normal((len(records), 5)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)  # the journal holds unit vectors only
    with tempfile.TemporaryDirectory() as tmp:
        journal = Journal(Path(tmp) / "journal.bin", 7)
        journal.reset(7)
        journal.add([r.id for r in records], vectors, records)
        journal.remove(removed)
        journal.put(records[::-1])
        journal.close()
        contents = read_journal(Path(tmp) / "journal.bin")
    added, removal, put = contents.entries
    assert contents.generation == 7 and contents.torn_bytes == 0
    assert added.ids == [r.id for r in records] and removal.ids == removed
    assert np.array_equal(added.vectors, vectors)
    assert all(same(a, b) for a, b in zip(added.records, records))
    assert all(same(a, b) for a, b in zip(put.records, records[::-1]))


@SETTINGS
@given(records=RECORDS)
def test_a_record_round_trips_exactly_through_its_json_object(records: list[Record]) -> None:
    for record in records:
        obj = record.to_json()
        # The journal's layout: the record's fields, then its metadata nested under one key.
        assert list(obj) == ["id", "image_path", "description", "metadata"]
        assert same(Record.from_json(json.loads(json.dumps(obj, ensure_ascii=False))), record)
