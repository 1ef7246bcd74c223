"""Metadata filters: parsing and its errors, the semantics in Python, and SQL that agrees with them.

Every store's ``matching_ids`` is checked against a table of cases in
``test_description_store_contract.py``; here random filters over random metadata must give
the same ids in Python, in SQLite's SQL and in every description store.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from multimodal_rag.errors import InvalidInputError
from multimodal_rag.filters import (
    MAX_FILTER_CONDITIONS,
    MAX_FILTER_DEPTH,
    And,
    Condition,
    MetadataFilter,
    Or,
    parse_filter,
)
from multimodal_rag.protocols import DescriptionStore
from multimodal_rag.types import Record
from test_description_store_contract import CONTRACT_STORES

# -- parsing ---------------------------------------------------------------------


def test_a_bare_value_is_eq_and_several_keys_all_must_match() -> None:
    assert parse_filter({"a": 1}) == Condition("a", "$eq", 1)
    assert parse_filter({"a": 1, "b": {"$gt": 2, "$lt": 5}}) == And(
        (Condition("a", "$eq", 1), Condition("b", "$gt", 2), Condition("b", "$lt", 5))
    )
    assert parse_filter({"$or": [{"a": "x"}, {"b": None}]}) == Or((Condition("a", "$eq", "x"), Condition("b", "$eq", None)))
    assert parse_filter({"a": {"$in": ["x", 1]}}) == Condition("a", "$in", ("x", 1))
    assert parse_filter({}) == And(())


@pytest.mark.parametrize(
    "obj",
    [
        {},
        {"a": 1},
        {"a": True, "b": None, "c": "x", "d": 1.5},
        {"category": {"$in": ["a", "b"]}, "price": {"$lt": 100}, "$or": [{"x": 1}, {"y": {"$nin": [1, "1"]}}]},
        {"$and": [{"$or": [{"a": {"$gte": "m"}}, {"a": {"$lte": -2}}]}, {"b": {"$ne": False}}]},
        {'q"u.o\\te': 1, "it's": 2},
    ],
)
def test_to_dict_reads_back_to_an_equal_filter(obj: dict[str, Any]) -> None:
    parsed = parse_filter(obj)
    assert parse_filter(parsed.to_dict()) == parsed
    assert json.loads(json.dumps(parsed.to_dict())) == parsed.to_dict()  # plain JSON
    assert parse_filter(parsed) is parsed


def test_filters_are_immutable_and_hashable() -> None:
    parsed = parse_filter({"a": {"$in": [1, 2]}, "b": 3})
    assert hash(parsed) == hash(parse_filter({"a": {"$in": [1, 2]}, "b": 3}))
    assert isinstance(parsed, MetadataFilter) and isinstance(parsed, And)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        parsed.filters = ()  # type: ignore[misc]


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        ([("a", 1)], "filter: expected a mapping of metadata keys to values or operators, got list"),
        ({"price": {"$lt": [1]}}, "filter['price']['$lt']: expected a number or a string, got list"),
        ({"price": {"$gte": True}}, "filter['price']['$gte']: expected a number or a string, got bool"),
        ({"price": {"$gt": None}}, "filter['price']['$gt']: expected a number or a string, got None"),
        ({"price": {"$lt": float("inf")}}, "filter['price']['$lt']: expected a finite number, got inf"),
        ({"price": float("nan")}, "filter['price']: expected a finite number, got nan"),
        ({"tags": ["a"]}, "filter['tags']: expected a string, a number, a bool or None, got list; to match any"),
        ({"tags": {"$eq": {"a": 1}}}, "filter['tags']['$eq']: expected a string, a number, a bool or None, got dict"),
        ({"c": {"$in": "abc"}}, "filter['c']['$in']: expected a non-empty list of values, got str"),
        ({"c": {"$nin": []}}, "filter['c']['$nin']: expected a non-empty list of values, got an empty list"),
        ({"c": {"$in": ["a", ["b"]]}}, "filter['c']['$in'][1]: expected a string, a number, a bool or None, got list"),
        ({"c": {"$like": "a"}}, "filter['c']['$like']: unknown operator; expected one of $eq, $ne, $in"),
        ({"c": {"sub": 1}}, "filter['c']['sub']: expected an operator ($eq"),
        ({"c": {}}, "filter['c']: expected at least one operator"),
        ({"$or": []}, "filter['$or']: expected a non-empty list of filters, got an empty list"),
        ({"$and": {"a": 1}}, "filter['$and']: expected a non-empty list of filters, got dict"),
        ({"$or": [{"a": 1}, "b"]}, "filter['$or'][1]: expected a mapping of metadata keys to values or operators, got str"),
        ({"$or": [{"a": {"$in": [1, float("nan")]}}]}, "filter['$or'][0]['a']['$in'][1]: expected a finite number"),
        ({"$eq": 1}, "filter['$eq']: $eq compares one key's value"),
        ({"$not": {"a": 1}}, "filter['$not']: unknown operator"),
        ({1: "a"}, "filter: key 1 is int; keys must be strings"),
        ({"a": "\ud800"}, "filter['a']: the string '\\ud800' is not valid Unicode text"),
    ],
)
def test_bad_filters_are_refused_naming_the_bad_part(obj: Any, message: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        parse_filter(obj)
    assert str(caught.value).startswith(message)
    assert isinstance(caught.value, ValueError)


def test_nesting_size_and_cycles_are_bounded() -> None:
    deep: dict[str, Any] = {"a": 1}
    for _ in range(MAX_FILTER_DEPTH - 1):
        deep = {"$and": [deep]}
    parse_filter(deep)
    with pytest.raises(InvalidInputError, match="nested more than"):
        parse_filter({"$or": [deep]})
    loop: dict[str, Any] = {}
    loop["$or"] = [loop]
    with pytest.raises(InvalidInputError, match="nested more than"):
        parse_filter(loop)
    parse_filter({"$or": [{"a": i} for i in range(MAX_FILTER_CONDITIONS)]})
    with pytest.raises(InvalidInputError, match="put long lists of values in one"):
        parse_filter({"$or": [{"a": i} for i in range(MAX_FILTER_CONDITIONS + 1)]})
    parse_filter({"a": {"$in": list(range(100_000))}})  # one comparison, however long the list


# -- semantics in Python --------------------------------------------------------

STORED = {"n": 1, "f": 2.5, "t": True, "z": None, "s": "abc", "l": [1], "o": {"x": 1}, "big": 2**70}


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        ({"n": 1.0}, True),  # numbers compare as numbers
        ({"n": True}, False),  # bool is not a number
        ({"t": 1}, False),
        ({"t": True}, True),
        ({"z": None}, True),
        ({"missing": None}, False),  # null is not missing
        ({"missing": {"$ne": None}}, True),  # a missing key passes $ne and $nin
        ({"missing": {"$nin": [1]}}, True),
        ({"missing": {"$in": [None]}}, False),
        ({"missing": {"$gte": 0}}, False),
        ({"s": {"$gt": "abb", "$lt": "abd"}}, True),
        ({"s": {"$gt": 1}}, False),  # strings order against strings only
        ({"n": {"$lt": "z"}}, False),
        ({"f": {"$gt": 2, "$lte": 2.5}}, True),
        ({"l": 1}, False),  # lists are not searched
        ({"l": {"$ne": 1}}, True),
        ({"o": {"$nin": [1, "x"]}}, True),
        ({"big": {"$gt": 2**70 - 1, "$lt": 2**70 + 1}}, True),  # exact in Python
        ({"t": {"$in": [1, "True"]}}, False),
        ({"n": {"$in": [True, 1.0]}}, True),
        ({"$or": [{"n": 2}, {"s": "abc"}]}, True),
        ({"$and": [{"n": 1}, {"s": "x"}]}, False),
        ({}, True),
    ],
)
def test_matches(obj: dict[str, Any], expected: bool) -> None:
    assert parse_filter(obj).matches(STORED) is expected


# -- SQL --------------------------------------------------------------------------

# Few keys and values, so that filters often meet the values they compare with.
KEYS = ["a", 'q"u\'o\\te.x', "ключ", "", "\x01", "$x"]
SCALARS = [None, True, False, 0, 1, 1.0, -2.5, 2**53 + 1, float(2**53), "", "a", "B", "é", "1"]
METADATA_VALUES = st.one_of(st.sampled_from(SCALARS), st.just([1, "a"]), st.just({"a": 1}))
METADATA = st.dictionaries(st.sampled_from(KEYS), METADATA_VALUES, max_size=4)
# Keys that start with "$" cannot be filtered on; keys with control characters can.
FILTER_KEYS = st.sampled_from([k for k in KEYS if not k.startswith("$")] + ["missing"])
ORDERABLE = st.sampled_from([s for s in SCALARS if s is not None and not isinstance(s, bool)])


def _condition() -> st.SearchStrategy[dict[str, Any]]:
    scalar = st.sampled_from(SCALARS)
    operand = st.one_of(
        st.tuples(st.sampled_from(["$eq", "$ne"]), scalar),
        st.tuples(st.sampled_from(["$in", "$nin"]), st.lists(scalar, min_size=1, max_size=4)),
        st.tuples(st.sampled_from(["$gt", "$gte", "$lt", "$lte"]), ORDERABLE),
    )
    return st.builds(lambda key, op: {key: {op[0]: op[1]}}, FILTER_KEYS, operand)


FILTERS = st.recursive(
    _condition(),
    lambda inner: st.builds(
        lambda word, items: {word: items}, st.sampled_from(["$and", "$or"]), st.lists(inner, min_size=1, max_size=3)
    ),
    max_leaves=6,
)
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def table() -> sqlite3.Connection:
    return sqlite3.connect(":memory:")


# Keys read from columns of their own, as a store with indexed fields has them.
INDEXED = {"a": ("a_type", "a_value"), "missing": ("missing_type", "missing_value")}
INDEXED_COLUMNS = "".join(
    f", {type_column} GENERATED ALWAYS AS (coalesce(json_type(metadata, '$.\"{key}\"'), ''))"
    f", {value_column} GENERATED ALWAYS AS (json_extract(metadata, '$.\"{key}\"'))"
    for key, (type_column, value_column) in INDEXED.items()
)


@pytest.mark.parametrize("indexed", [False, True], ids=["json", "indexed"])
@SETTINGS
@given(rows=st.lists(METADATA, max_size=8), obj=FILTERS)
def test_sqlite_sql_agrees_with_python(
    table: sqlite3.Connection, indexed: bool, rows: list[dict[str, Any]], obj: Any
) -> None:
    parsed = parse_filter(obj)
    where, params = parsed.to_sqlite("records.metadata", indexed=INDEXED if indexed else None)
    table.execute("DROP TABLE IF EXISTS records")
    table.execute(f"CREATE TABLE records (id INTEGER, metadata TEXT{INDEXED_COLUMNS})")
    table.executemany("INSERT INTO records VALUES (?, ?)", [(i, json.dumps(m, ensure_ascii=False)) for i, m in enumerate(rows)])
    found = {row[0] for row in table.execute(f"SELECT id FROM records WHERE {where}", params)}
    assert found == {i for i, m in enumerate(rows) if parsed.matches(m)}


@pytest.fixture(params=sorted(CONTRACT_STORES))
def one_store(request: pytest.FixtureRequest) -> DescriptionStore:
    return CONTRACT_STORES[request.param]()


# One store serves every example of a test (emptied each time): a server's table costs a connection.
@settings(SETTINGS, max_examples=100, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(rows=st.lists(METADATA, max_size=8), obj=FILTERS)
def test_every_store_agrees_with_python(one_store: DescriptionStore, rows: list[dict[str, Any]], obj: Any) -> None:
    one_store.delete([record.id for record in one_store])
    one_store.put(Record(id=f"r{i}", metadata=m) for i, m in enumerate(rows))
    parsed = parse_filter(obj)
    assert one_store.matching_ids(parsed) == {f"r{i}" for i, m in enumerate(rows) if parsed.matches(m)}


def test_sql_binds_every_key_and_value() -> None:
    parsed = parse_filter({"k'; DROP TABLE records;--": {"$in": ["v'); --", 1]}, 'a"b': {"$gt": "x'"}})
    where, params = parsed.to_sqlite("metadata")
    assert "DROP" not in where and "v')" not in where and "x'" not in where
    assert "k'; DROP TABLE records;--" in json.dumps(params, ensure_ascii=False)
    composed, pg_params = parsed.to_postgres("metadata")
    from psycopg import sql

    assert isinstance(composed, sql.Composable)
    text = composed.as_string(None)
    assert '"metadata"' in text and "DROP" not in text and "x'" not in text
    assert "k'; DROP TABLE records;--" in pg_params and 'a"b' in pg_params


@pytest.mark.parametrize("column", ["", "meta data", "a.b.c", "x; DROP", '"m"', 3])
def test_sql_column_names_are_checked(column: Any) -> None:
    parsed = parse_filter({"a": 1})
    with pytest.raises(InvalidInputError, match="column must be a column name"):
        parsed.to_sqlite(column)
    with pytest.raises(InvalidInputError, match="column must be a column name"):
        parsed.to_sqlite("metadata", indexed={"a": ("a_type", column)})
    with pytest.raises(InvalidInputError, match="column must be a column name"):
        parsed.to_postgres(column)


def test_sql_refuses_nul_which_only_python_compares() -> None:
    cases = [({"a": "x\x00"}, True), ({"a\x00": 1}, True), ({"$or": [{"b": 1}, {"a": {"$in": ["y", "\x00"]}}]}, False)]
    for obj, matches in cases:
        parsed = parse_filter(obj)
        assert parsed.contains_nul and parsed.matches({"a": "x\x00", "a\x00": 1}) is matches
        with pytest.raises(InvalidInputError, match="NUL"):
            parsed.to_sqlite("metadata")
        with pytest.raises(InvalidInputError, match="NUL"):
            parsed.to_postgres("metadata")
    assert not parse_filter({"a": "x"}).contains_nul


# -- Milvus ------------------------------------------------------------------------
# Here the text only; tests/test_milvus_filters.py runs it on a server against matches().


@pytest.mark.parametrize(
    ("obj", "expression"),
    [
        ({"price": {"$lt": 100}}, 'metadata["n"]["price"] < 100'),
        ({"price": {"$gte": 2.5}}, 'metadata["n"]["price"] >= 2.5'),
        ({"name": {"$gt": "m"}}, 'metadata["s"]["name"] > "m"'),
        ({"on_sale": True}, 'metadata["b"]["on_sale"] == true'),
        ({"note": None}, 'exists metadata["z"]["note"]'),
        ({"note": {"$ne": None}}, 'not exists metadata["z"]["note"]'),
        ({"price": {"$ne": 1}}, 'not (exists metadata["n"]["price"] and metadata["n"]["price"] == 1)'),
        (
            {"category": {"$in": ["a", "b"]}},
            'metadata["s"]["category"] == "a" or metadata["s"]["category"] == "b"',
        ),
        (
            {"k": {"$nin": [1, "x", None]}},
            'not ((exists metadata["n"]["k"] and metadata["n"]["k"] == 1) or '
            '((exists metadata["s"]["k"] and metadata["s"]["k"] == "x") or exists metadata["z"]["k"]))',
        ),
        (
            {"a": 1, "$or": [{"b": "x"}, {"c": False}]},
            'metadata["n"]["a"] == 1 and (metadata["s"]["b"] == "x" or metadata["b"]["c"] == false)',
        ),
        ({"big": {"$gt": 2**70}}, 'metadata["n"]["big"] > 1.1805916207174113e+21'),
        ({}, "true"),
    ],
)
def test_to_milvus_text(obj: Any, expression: str) -> None:
    assert parse_filter(obj).to_milvus() == expression


def test_to_milvus_keeps_one_value_per_kind_in_an_in_list() -> None:
    # 1, 1.0 and True are one element of a Python set; here True is a boolean of its own.
    text = parse_filter({"k": {"$in": [1, 1.0, True]}}).to_milvus("m")
    assert text == 'm["n"]["k"] == 1 or m["b"]["k"] == true'


def test_to_milvus_quotes_values_and_encodes_keys() -> None:
    hostile_key = '"] or true or metadata["x'
    hostile_value = '" or id != "\\'
    text = parse_filter({hostile_key: hostile_value}).to_milvus()
    assert text == 'metadata["s"]["%22%5D%20or%20true%20or%20metadata%5B%22x"] == "\\" or id != \\"\\\\"'
    assert parse_filter({"ключ": "é\n\t\r"}).to_milvus() == 'metadata["s"]["%D0%BA%D0%BB%D1%8E%D1%87"] == "é\\n\\t\\r"'
    # Percent-encoding keeps distinct keys distinct: a key that looks encoded is encoded again.
    assert parse_filter({"%22": 1}).to_milvus() == 'metadata["n"]["%2522"] == 1'


@pytest.mark.parametrize("obj", [{"a": "x\x00"}, {"a": {"$in": ["ok", "\x1b["]}}, {"a": {"$gt": "\x7f"}}])
def test_to_milvus_leaves_control_characters_to_the_description_store(obj: Any) -> None:
    from multimodal_rag.filters import NotExpressible

    with pytest.raises(NotExpressible):
        parse_filter(obj).to_milvus()


def test_to_milvus_leaves_very_long_filters_to_the_description_store() -> None:
    from multimodal_rag.filters import MAX_MILVUS_TERMS, NotExpressible

    parse_filter({"a": {"$in": list(range(MAX_MILVUS_TERMS))}}).to_milvus()
    with pytest.raises(NotExpressible):
        parse_filter({"a": {"$in": list(range(MAX_MILVUS_TERMS + 1))}}).to_milvus()


@pytest.mark.parametrize("field", ["", "meta data", 'm"', "a.b", "1x", 3])
def test_to_milvus_field_names_are_checked(field: Any) -> None:
    with pytest.raises(InvalidInputError, match="field must be a Milvus field name"):
        parse_filter({"a": 1}).to_milvus(field)


def test_milvus_document_keeps_each_kind_apart() -> None:
    from multimodal_rag.filters import milvus_document

    document = milvus_document(
        {"p": 10, "f": 2.5, "s": "x", "t": True, "n": None, "l": [1], "o": {"a": 1}, "big": 2**70, "$d": 1, "a b": 1}
    )
    assert document == {
        "n": {"p": 10, "f": 2.5, "big": float(2**70), "a%20b": 1},
        "s": {"s": "x"},
        "b": {"t": True},
        "z": {"n": True},
    }
    assert milvus_document({}) == {}


# -- the package: one tree, one module per dialect ------------------------------------


def test_every_name_the_module_exported_still_imports_from_the_package() -> None:
    import multimodal_rag.filters as filters

    assert filters.__all__ == [
        "COMPARISONS",
        "MAX_FILTER_CONDITIONS",
        "MAX_FILTER_DEPTH",
        "MAX_MILVUS_TERMS",
        "And",
        "Condition",
        "MetadataFilter",
        "NotExpressible",
        "Or",
        "Scalar",
        "milvus_document",
        "parse_filter",
        "sqlite_path",
    ]
    assert all(hasattr(filters, name) for name in filters.__all__)


def test_each_dialect_is_a_function_of_its_own_module_that_the_methods_call() -> None:
    from multimodal_rag.filters import milvus, python, sqlite

    parsed = parse_filter({"a": {"$in": [1, "x"]}, "$or": [{"b": {"$gt": 2}}, {"c": {"$ne": None}}]})
    for metadata in ({"a": 1, "b": 3}, {"a": "x", "c": None}, {"a": 2}):
        assert python.matches(parsed, metadata) is parsed.matches(metadata)
    assert sqlite.to_sqlite(parsed, "m", indexed={"a": ("t", "v")}) == parsed.to_sqlite("m", indexed={"a": ("t", "v")})
    assert milvus.to_milvus(parsed, "m") == parsed.to_milvus("m")


def test_a_new_dialect_is_a_visitor_and_no_node_changes() -> None:
    class Keys:
        """The keys a filter reads: written outside the package, as a backend would."""

        def condition(self, node: Condition) -> set[str]:
            return {node.key}

        def all_of(self, node: And) -> set[str]:
            return set().union(*(f.accept(self) for f in node.filters))

        def any_of(self, node: Or) -> set[str]:
            return set().union(*(f.accept(self) for f in node.filters))

    parsed = parse_filter({"a": 1, "$or": [{"b": {"$in": [1, 2]}}, {"$and": [{"c": {"$ne": "x"}}]}]})
    assert parsed.accept(Keys()) == {"a", "b", "c"}
    assert parse_filter({}).accept(Keys()) == set()
