"""The package's public face: lazy imports, a sorted and complete __all__."""

from __future__ import annotations

import ast
import importlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

import multimodal_rag


def test_import_does_not_load_heavy_libraries() -> None:
    code = (
        "import sys, multimodal_rag; "
        "rag = multimodal_rag.MultimodalRAG; "
        "print(' '.join(m for m in ('torch', 'faiss', 'openai', 'clip', 'hnswlib', 'ray') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


#: The public packages and modules that offer names lazily, each from one table (_EXPORTS).
LAZY_MODULES = [
    "multimodal_rag",
    "multimodal_rag.adapter",
    "multimodal_rag.answerers",
    "multimodal_rag.descriptions",
    "multimodal_rag.embedders",
    "multimodal_rag.rerankers",
    "multimodal_rag.tools",
    "multimodal_rag.vectors",
]


def _module_names_in_fresh_process(module: str) -> tuple[list[str], list[str], list[str]]:
    # A fresh interpreter: what dir() lists before any name is used, and what it imported.
    code = (
        f"import json, sys, importlib; m = importlib.import_module({module!r}); "
        "print(json.dumps([m.__all__, dir(m), sorted(sys.modules)]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    all_, listed, loaded = json.loads(out.stdout)
    return all_, listed, loaded


def test_the_top_level_is_small_sorted_and_complete() -> None:
    public = multimodal_rag.__all__
    assert public == sorted(public)
    assert len(public) <= 26
    assert public == sorted([*multimodal_rag._EXPORTS, "__version__"])
    assert not set(public) & set(multimodal_rag._MOVED)
    # What an application needs is there: the facade, the protocols and the root error.
    for name in [
        "MultimodalRAG",
        "Embedder",
        "VectorStore",
        "DescriptionStore",
        "Answerer",
        "MultimodalRAGError",
    ]:
        assert name in public


@pytest.mark.parametrize("module", LAZY_MODULES)
def test_every_public_name_resolves_lazily_and_dir_lists_it(module: str) -> None:
    public, listed, loaded = _module_names_in_fresh_process(module)
    assert public == sorted(public)
    assert set(public) <= set(listed)
    assert not {"torch", "faiss", "openai", "clip", "hnswlib"} & set(loaded)
    package = importlib.import_module(module)
    for name in public:
        assert getattr(package, name) is not None


def _tree(module: str) -> ast.Module:
    package = importlib.import_module(module)
    assert package.__file__ is not None
    return ast.parse(Path(package.__file__).read_text(encoding="utf-8"))


@pytest.mark.parametrize("module", LAZY_MODULES)
def test_all_is_a_literal_list(module: str) -> None:
    # Type checkers read __all__ only when it is written out; a computed one hides every name.
    (assignment,) = [
        node
        for node in _tree(module).body
        if isinstance(node, ast.Assign)
        and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets)
    ]
    assert isinstance(assignment.value, ast.List)
    names = [ast.literal_eval(element) for element in assignment.value.elts]
    assert names == importlib.import_module(module).__all__
    assert [n for n in names if n != "__version__"] == list(
        importlib.import_module(module)._EXPORTS
    )


@pytest.mark.parametrize("module", LAZY_MODULES)
def test_type_checkers_see_every_lazy_name_where_it_resolves(module: str) -> None:
    # The imports under `if TYPE_CHECKING:` are what mypy and pyright see; the lazy table is
    # what runs. They must name the same objects from the same modules.
    (block,) = [
        node
        for node in _tree(module).body
        if isinstance(node, ast.If)
        and isinstance(node.test, ast.Name)
        and node.test.id == "TYPE_CHECKING"
    ]
    seen = {
        alias.asname or alias.name: node.module
        for node in block.body
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }
    assert seen == importlib.import_module(module)._EXPORTS


@pytest.mark.parametrize("name", sorted(multimodal_rag._MOVED))
def test_each_name_moved_off_the_top_level_warns_and_still_resolves(name: str) -> None:
    home = multimodal_rag._MOVED[name]
    expected = getattr(importlib.import_module(home), name)
    with pytest.warns(
        DeprecationWarning, match=rf"from {re.escape(home)} import {name}`"
    ) as caught:
        assert getattr(multimodal_rag, name) is expected
    assert caught[0].filename == __file__  # the warning points at the code that asked
    assert name in importlib.import_module(home).__all__
    assert name not in dir(multimodal_rag)


def test_a_moved_name_warns_on_a_from_import() -> None:
    with pytest.warns(
        DeprecationWarning, match="use `from multimodal_rag.errors import NotFoundError`"
    ):
        from multimodal_rag import NotFoundError
    from multimodal_rag.errors import NotFoundError as home

    assert NotFoundError is home


#: Modules that became private, left at their old path as shims: module -> one name it offered.
SHIMS = {
    "contact_sheet": "render_contact_sheet",
    "images": "open_image",
    "rag": "MultimodalRAG",
    "random_checkpoint": "make_random_clip_checkpoint",
    "streaming": "AnswerStream",
    "validation": "check_ids",
    "verify": "VerificationReport",
}


@pytest.mark.parametrize("module", sorted(SHIMS))
def test_an_old_module_path_warns_and_still_offers_its_names(module: str) -> None:
    # A fresh interpreter: a module warns when it is first imported, and only then.
    code = (
        "import json, warnings\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        f"    import multimodal_rag.{module} as old\n"
        f"import multimodal_rag._{module} as new\n"
        f"print(json.dumps([[str(w.message) for w in caught if w.category is DeprecationWarning], "
        f"old.{SHIMS[module]} is new.{SHIMS[module]}, old.__all__ == new.__all__]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    messages, same, same_all = json.loads(out.stdout)
    assert len(messages) == 1 and f"multimodal_rag.{module} is deprecated" in messages[0]
    assert same and same_all


def test_no_module_of_the_package_imports_a_deprecated_path() -> None:
    assert multimodal_rag.__file__ is not None
    root = Path(multimodal_rag.__file__).parent
    pattern = re.compile(rf"^\s*(from|import) multimodal_rag\.({'|'.join(SHIMS)})\b", re.M)
    offenders = [
        str(path.relative_to(root))
        for path in root.rglob("*.py")
        if path.stem not in SHIMS and pattern.search(path.read_text(encoding="utf-8"))
    ]
    assert offenders == []


def test_every_error_lives_in_errors_and_derives_from_the_root() -> None:
    from multimodal_rag import errors

    for name in errors.__all__:
        assert issubclass(getattr(errors, name), errors.MultimodalRAGError)
        assert (
            name == "MultimodalRAGError" or multimodal_rag._MOVED[name] == "multimodal_rag.errors"
        )


def test_the_backend_kit_offers_what_a_backend_needs() -> None:
    from multimodal_rag import backend

    assert backend.__all__ == sorted(backend.__all__, key=lambda n: (not n.isupper(), n))
    for name in [
        "Embedder",
        "VectorStore",
        "DescriptionStore",
        "Answerer",
        "IdFilter",
        "MetadataFilter",
        "Neighbor",
        "open_image",
        "check_ids",
        "check_vectors",
        "check_queries",
        "check_record",
    ]:
        assert name in backend.__all__
    for name in backend.__all__:
        assert getattr(backend, name) is not None


def test_errors_also_subclass_builtins() -> None:
    from multimodal_rag import errors

    assert issubclass(errors.DimensionMismatchError, ValueError)
    assert issubclass(errors.NotFoundError, KeyError)
    assert issubclass(errors.KnowledgeBaseNotFoundError, FileNotFoundError)
    assert issubclass(errors.AnswererTimeoutError, TimeoutError)


def test_unknown_attribute_raises_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        multimodal_rag.Nope  # noqa: B018
