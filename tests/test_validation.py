"""The shared checks of multimodal_rag._validation, as a user's own backend calls them."""

from __future__ import annotations

import numpy as np
import pytest

import multimodal_rag._validation as validation
from multimodal_rag._validation import (
    UNIT_NORM_TOLERANCE,
    check_ids,
    check_int,
    check_queries,
    check_question,
    check_record,
    check_timeout,
    check_vectors,
)
from multimodal_rag.errors import DimensionMismatchError, InvalidInputError, MissingDependencyError
from multimodal_rag.types import Record


def test_every_public_name_exists_and_the_list_is_sorted() -> None:
    assert validation.__all__ == sorted(validation.__all__)
    assert all(hasattr(validation, name) for name in validation.__all__)


@pytest.mark.parametrize(
    ("value", "minimum", "message"),
    [
        (0, 1, "k must be a positive integer, got 0"),
        (True, 1, "k must be a positive integer, got True"),
        (2.0, 1, "k must be a positive integer, got 2.0"),
        ("3", 1, "k must be a positive integer, got '3'"),
        (-1, 0, "k must be a non-negative integer, got -1"),
        (1, 2, "k must be an integer of at least 2, got 1"),
    ],
)
def test_check_int_refuses_what_is_not_a_whole_number_in_range(value: object, minimum: int, message: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        check_int("k", value, minimum=minimum)
    assert str(caught.value) == message


def test_check_int_returns_a_python_int_also_for_numpy_integers() -> None:
    assert check_int("k", 5) == 5
    assert check_int("count", 0, minimum=0) == 0
    value = check_int("k", np.int64(7))
    assert value == 7 and type(value) is int


def test_check_timeout_takes_positive_seconds_only() -> None:
    assert check_timeout(2) == 2.0 and isinstance(check_timeout(2), float)
    for bad in (0, -1.5, True, "10", None):
        with pytest.raises(InvalidInputError, match="timeout must be a positive number of seconds"):
            check_timeout(bad)


def test_check_question_refuses_what_is_no_question() -> None:
    assert check_question("What is it?") == "What is it?"
    with pytest.raises(InvalidInputError, match="empty"):
        check_question("  \n")
    with pytest.raises(InvalidInputError, match="must be a string"):
        check_question(b"bytes")


def test_check_record_refuses_metadata_under_a_reserved_key() -> None:
    check_record(Record(id="a", metadata={"shade": "red"}))
    with pytest.raises(InvalidInputError, match="reserved key"):
        check_record(Record(id="a", metadata={"description": "x"}))
    with pytest.raises(InvalidInputError, match="expected a Record"):
        check_record({"id": "a"})


def test_check_ids_refuses_a_string_an_empty_id_and_a_repeat() -> None:
    assert check_ids(("a", "b")) == ["a", "b"]
    for bad, message in ((["a", "a"], "more than once"), ([""], "non-empty"), ("ab", "not a single string")):
        with pytest.raises(InvalidInputError, match=message):
            check_ids(bad)


def test_stored_vectors_must_be_unit_vectors_but_queries_need_not_be() -> None:
    vector = np.zeros((1, 4), dtype=np.float64)
    vector[0, 0] = 1.0 + 2 * UNIT_NORM_TOLERANCE
    with pytest.raises(InvalidInputError, match="row 0 has norm"):
        check_vectors(vector, 4)
    stored = check_vectors(vector / np.linalg.norm(vector), 4, count=1)
    assert stored.dtype == np.float32 and stored.shape == (1, 4) and stored.flags.c_contiguous
    assert check_queries(vector[0], 4, 3).shape == (1, 4)  # one vector becomes one row
    with pytest.raises(DimensionMismatchError):
        check_queries(vector, 5, 3)
    with pytest.raises(InvalidInputError, match="all zeros"):
        check_queries(np.zeros((2, 4), np.float32), 4, 3)
    with pytest.raises(InvalidInputError, match="k must be a positive integer"):
        check_queries(vector, 4, 0)


def test_a_missing_optional_package_names_the_install_that_brings_it() -> None:
    from multimodal_rag._extras import require

    with pytest.raises(MissingDependencyError, match=r"pip install 'multimodal-rag\[milvus\]'") as caught:
        require("multimodal_rag_no_such_module", user="MilvusVectorStore", extra="milvus")
    assert isinstance(caught.value, ImportError) and "MilvusVectorStore needs" in str(caught.value)
    with pytest.raises(MissingDependencyError, match="pip install clip-anytorch"):
        require("multimodal_rag_no_such_module", user="CLIPEmbedder", package="clip-anytorch")
    assert require("json", user="nobody").dumps([]) == "[]"
