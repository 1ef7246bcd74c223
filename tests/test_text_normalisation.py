"""The normalisation every full-text index applies, rule by rule, and what arbitrary text does to it
and to the stores that use it."""

from __future__ import annotations

import unicodedata

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from multimodal_rag._text_normalisation import (
    LETTERS,
    PREFIXES,
    SUFFIXES,
    ZWNJ,
    index_text,
    normalise,
    search_terms,
)
from multimodal_rag.descriptions.full_text import MAX_TERMS, query_terms
from multimodal_rag.errors import InvalidInputError
from multimodal_rag.types import Record

# -- rule 1: NFKC --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("typed", "expected"),
    [
        ("\ufed9\ufe98\ufe8e\ufe8f", "کتاب"),  # Arabic presentation forms (isolated, medial, final)
        ("\ufefb", "لا"),  # the lam-alef ligature
        ("ＡＢＣ１２３", "ABC123"),  # full-width Latin and digits
        ("ﬁle", "file"),  # a Latin ligature
        ("e\u0301", "é"),  # a combining accent composed
    ],
)
def test_compatibility_forms_become_plain_letters(typed: str, expected: str) -> None:
    assert normalise(typed) == expected


# -- rule 2: letters -----------------------------------------------------------------


@pytest.mark.parametrize(("letter", "folded"), sorted(LETTERS.items()), ids=[f"U+{ord(c):04X}" for c in sorted(LETTERS)])
def test_each_letter_form_folds_to_the_persian_one(letter: str, folded: str) -> None:
    assert normalise(f"ب{letter}ب") == f"ب{folded}ب"


def test_the_canonical_persian_letters_are_left_alone() -> None:
    persian = "ابپتثجچحخدذرزژسشصضطظعغفقکگلمنوهی"
    assert normalise(persian) == persian
    assert not set(persian) & set(LETTERS)


def test_words_typed_on_an_arabic_keyboard_meet_the_persian_spelling() -> None:
    assert normalise("كتاب") == normalise("کتاب") == "کتاب"
    assert normalise("باتري") == normalise("باتری")
    assert normalise("خانۀ") == normalise("خانه")
    assert normalise("پائیز") == normalise("پاییز")
    assert normalise("آب") == normalise("اب") == normalise("أب")


# -- rule 3: digits and number punctuation ------------------------------------------


@pytest.mark.parametrize(
    "digits",
    ["۰۱۲۳۴۵۶۷۸۹", "٠١٢٣٤٥٦٧٨٩", "०१२३४५६७८९", "০১২৩৪৫৬৭৮৯", "０１２３４５６７８９", "𝟎𝟏𝟐𝟑𝟒𝟓𝟔𝟕𝟖𝟗"],
    ids=["persian", "arabic-indic", "devanagari", "bengali", "full-width", "mathematical"],
)
def test_decimal_digits_of_every_script_become_ascii(digits: str) -> None:
    assert normalise(digits) == "0123456789"


def test_arabic_decimal_thousands_and_percent_signs_become_ascii() -> None:
    assert normalise("۴٫۶") == "4.6"
    assert normalise("۱٬۲۰۰") == "1,200"
    assert normalise("۵۰٪") == "50%"


# -- rule 4: removed characters ------------------------------------------------------


@pytest.mark.parametrize(
    "mark",
    ["\u064b", "\u064c", "\u064d", "\u064e", "\u064f", "\u0650", "\u0651", "\u0652", "\u0670", "\u0654", "\u06e1", "\u0615"],
    ids=["fathatan", "dammatan", "kasratan", "fatha", "damma", "kasra", "shadda", "sukun", "superscript-alef",
         "hamza-above", "quranic-sukun", "quranic-sign"],
)  # fmt: skip
def test_arabic_vowel_and_quranic_marks_are_removed(mark: str) -> None:
    assert normalise(f"کت{mark}اب") == "کتاب"


def test_tatweel_is_removed() -> None:
    assert normalise("کتـــاب") == "کتاب"


@pytest.mark.parametrize(
    "invisible",
    ["\u200e", "\u200f", "\u061c", "\u202a", "\u202b", "\u202c", "\u202d", "\u202e", "\u2066", "\u2067", "\u2068",
     "\u2069", "\u00ad", "\u200d", "\u2060", "\ufeff"],
    ids=lambda c: f"U+{ord(c):04X}",
)  # fmt: skip
def test_layout_controls_are_removed_so_the_letters_either_side_join(invisible: str) -> None:
    assert normalise(f"کت{invisible}اب") == "کتاب"
    assert normalise(f"lith{invisible}ium") == "lithium"


def test_latin_accents_are_left_to_the_search_engine() -> None:
    assert normalise("café") == "café"


# -- rule 5: controls and ZWNJ ---------------------------------------------------------


def test_control_characters_become_spaces() -> None:
    assert normalise("a\x00b\tc\nd\x1be\x7ff") == "a b c d e f"


def test_zwnj_is_kept_once_and_never_beside_a_space() -> None:
    assert normalise(f"می{ZWNJ}{ZWNJ}شود") == f"می{ZWNJ}شود"
    assert normalise(f"می{ZWNJ} شود") == "می شود"
    assert normalise(f"می {ZWNJ}شود") == "می شود"
    assert normalise(f"{ZWNJ}کتاب{ZWNJ}") == "کتاب"
    assert normalise("می\u200bشود") == f"می{ZWNJ}شود"  # the zero-width space typed for it


# -- what is indexed and searched ------------------------------------------------------


@pytest.mark.parametrize("typed", [f"می{ZWNJ}شود", "میشود", "می شود"], ids=["zwnj", "joined", "space"])
def test_each_spelling_of_a_zwnj_word_shares_a_term_with_every_other(typed: str) -> None:
    indexed = set(index_text(typed).split())
    for query in (f"می{ZWNJ}شود", "میشود", "می شود"):
        assert indexed & set(search_terms(query)), (typed, query)


def test_a_zwnj_compound_is_indexed_split_and_joined() -> None:
    assert index_text(f"کتاب{ZWNJ}های آشپزی") == "کتاب های اشپزی کتابهای"
    assert index_text(f"چراغ{ZWNJ}قوه{ZWNJ}ی شارژی") == "چراغ قوه ی شارژی چراغقوهی"


@pytest.mark.parametrize("prefix", sorted(PREFIXES))
def test_a_prefix_typed_apart_is_also_indexed_joined(prefix: str) -> None:
    assert index_text(f"{prefix} رود").split()[-1] == f"{prefix}رود"


@pytest.mark.parametrize("suffix", sorted(SUFFIXES))
def test_a_suffix_typed_apart_is_also_indexed_joined(suffix: str) -> None:
    assert index_text(f"کتاب {suffix}").split()[-1] == f"کتاب{suffix}"


def test_other_words_typed_apart_are_indexed_as_typed() -> None:
    assert index_text("لباس شویی") == "لباس شویی"
    assert index_text("red ha") == "red ha"
    assert index_text("کتاب، های") == "کتاب، های"  # punctuation between: not one word


def test_a_query_also_joins_neighbouring_persian_words() -> None:
    assert search_terms("ماشین لباس شویی XR-2000, (برقی)") == [
        "ماشین", "لباس", "شویی", "XR-2000", "برقی", "ماشینلباس", "لباسشویی",
    ]  # fmt: skip


def test_query_terms_are_distinct_and_capped() -> None:
    assert search_terms("کتاب كتاب کتاب") == ["کتاب", "کتابکتاب"]
    words = " ".join(f"w{i}" for i in range(MAX_TERMS + 10))
    assert query_terms(words) == [f"w{i}" for i in range(MAX_TERMS)]


def test_empty_and_blank_text() -> None:
    assert index_text("") == index_text(" \t\n") == index_text(ZWNJ) == ""
    assert search_terms("") == search_terms("\u200f\u0640") == []


# -- bad input ---------------------------------------------------------------------------


@pytest.mark.parametrize("function", [normalise, index_text, search_terms])
def test_a_lone_surrogate_is_refused_naming_the_text(function: object) -> None:
    with pytest.raises(InvalidInputError, match="lone surrogate") as info:
        function("کتاب \udc80")  # type: ignore[operator]
    assert "کتاب" in str(info.value)


@pytest.mark.parametrize("function", [normalise, index_text, search_terms])
def test_a_value_that_is_not_text_is_refused(function: object) -> None:
    with pytest.raises(InvalidInputError, match="must be a string"):
        function(b"bytes")  # type: ignore[operator]


# -- arbitrary text ------------------------------------------------------------------------

# Text from every plane, Persian and Arabic weighted in, invisible characters and surrogates included.
ANY_TEXT = st.text(
    st.one_of(
        st.characters(),
        st.characters(min_codepoint=0x0600, max_codepoint=0x06FF),
        st.sampled_from([ZWNJ, "\u200b", "\u200f", "\u202e", "\u0640", " ", "\x00", "\ufeff"]),
    ),
    max_size=40,
)


@settings(max_examples=400, deadline=None)
@given(ANY_TEXT)
def test_arbitrary_text_is_normalised_once_and_for_all_or_refused(text: str) -> None:
    try:
        once = normalise(text)
    except InvalidInputError:
        assert any(0xD800 <= ord(c) <= 0xDFFF for c in text)
        return
    assert normalise(once) == once
    assert unicodedata.is_normalized("NFKC", once)
    assert search_terms(once) == search_terms(text)
    assert not any(unicodedata.category(c) == "Cc" for c in index_text(text))


def _embedded_stores() -> list[object]:
    from multimodal_rag.descriptions.jsonl import JSONLDescriptionStore
    from multimodal_rag.descriptions.sqlite import SQLiteDescriptionStore

    return [JSONLDescriptionStore(), SQLiteDescriptionStore(), SQLiteDescriptionStore(tokenizer="trigram")]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ANY_TEXT, ANY_TEXT)
def test_arbitrary_text_never_breaks_put_or_search(description: str, query: str) -> None:
    for store in _embedded_stores():
        try:
            store.put([Record(id="r", description=description, metadata={"note": query})])  # type: ignore[attr-defined]
        except InvalidInputError:
            assert any(0xD800 <= ord(c) <= 0xDFFF for c in description + query)
            continue
        assert store.get("r").description == description  # type: ignore[attr-defined]
        for text in (query, description):
            try:
                results = store.search_text(text, 3)  # type: ignore[attr-defined]
            except InvalidInputError:
                assert any(0xD800 <= ord(c) <= 0xDFFF for c in text)
                continue
            assert [id_ for id_, _ in results] in ([], ["r"])


def test_a_hit_shows_the_description_and_read_text_as_typed() -> None:
    from helpers import ColorEmbedder, solid
    from multimodal_rag import MultimodalRAG
    from multimodal_rag.ocr import ReadText, TextLine

    typed = f"كِتاب آشپزي ایرانی با عکس{ZWNJ}های ۲۰۰۰ رنگی"
    box = ((0.0, 0.0), (9.0, 0.0), (9.0, 2.0), (0.0, 2.0))
    read = ReadText(lines=[TextLine(text="چاپ ۱۴۰۲", confidence=0.9, box=box)])
    rag = MultimodalRAG(ColorEmbedder())
    rag.add([solid("red")], ids=["book"], descriptions=[typed], progress=False)
    rag.description_store.put([attrs.evolve(rag.get("book"), ocr=read)])  # as a reader would have kept it
    for query in ("کتاب", "2000", "عکسهای", "1402"):
        [hit] = rag.search(text=query, k=1, mode="lexical")
        assert (hit.id, hit.description, hit.ocr) == ("book", typed, read), query
    rag.close()

