"""Filling in missing descriptions with a model, batch by batch, never over a person's words.

A knowledge base is often indexed before anyone has written about every image. An
[`ImageDescriber`][multimodal_rag.protocols.ImageDescriber] (such as [`OpenAIAnswerer`][multimodal_rag.answerers.openai.OpenAIAnswerer])
can label the rest. Each label it writes is marked in the record's metadata, so a person
can find and review them:

```python
rag.search(text="...", filter={"description_source": "machine"})
```

The facade's part that runs it on a knowledge base is `multimodal_rag._facade.describing`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import attrs

from multimodal_rag.errors import AnswererBadRequestError, ImageError
from multimodal_rag.protocols import ImageDescriber
from multimodal_rag.types import Answer, DescribeResult, Record, Skipped

__all__ = [
    "MACHINE",
    "MODEL_KEY",
    "SOURCE_KEY",
    "fill_missing_descriptions",
    "machine_written",
    "needs_description",
]

#: Metadata key that says who wrote a description; its value is `MACHINE` for a model.
SOURCE_KEY = "description_source"
#: The value of `SOURCE_KEY` for descriptions a model wrote.
MACHINE = "machine"
#: Metadata key naming the model that wrote a description.
MODEL_KEY = "description_model"


def needs_description(record: Record) -> bool:
    """Whether ``record`` has no description (an empty or blank one counts as none)."""
    return record.description is None or not record.description.strip()


def fill_missing_descriptions(
    records: Sequence[Record],
    describer: ImageDescriber,
    *,
    store: Callable[[list[tuple[str, Answer]]], list[str]],
    batch_size: int = 8,
    workers: int = 4,
    progress: bool | None = None,
) -> DescribeResult:
    """Describe the images of ``records`` and store each batch as soon as it is done.

    Args:
        records: Records without a description.
        describer: Writes the descriptions.
        store: Stores a batch of ``(id, answer)`` and returns the ids it updated; it must
            leave alone any record that has a description by then (see `machine_written`).
        batch_size: Images per batch; each batch is stored before the next starts, so an
            interruption loses at most one batch of work.
        workers: Images of a batch described at the same time.
        progress: Show a progress bar (default: when writing to a terminal).

    Raises:
        AnswererError: The describer failed in a way that would fail every image (bad
            credentials, rate limit, unreachable provider); what the batch had finished
            is stored first.
    """
    from tqdm.auto import tqdm

    from multimodal_rag._validation import check_int

    batch_size, workers = check_int("batch_size", batch_size), check_int("workers", workers)
    described: list[str] = []
    skipped: list[Skipped] = []
    todo = []
    for record in records:
        if record.image_path is None:
            skipped.append(Skipped(source=record.id, reason="the knowledge base keeps no image file for it"))
        else:
            todo.append(record)
    bar = tqdm(total=len(todo), desc="describing", unit="img", disable=None if progress is None else not progress)
    try:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for start in range(0, len(todo), batch_size):
                batch = todo[start : start + batch_size]
                outcomes = list(pool.map(lambda record: _describe(describer, record), batch))
                written: list[tuple[str, Answer]] = []
                fatal = None
                for record, outcome in zip(batch, outcomes, strict=True):
                    if isinstance(outcome, Skipped):
                        skipped.append(outcome)
                    elif isinstance(outcome, Answer):
                        written.append((record.id, outcome))
                    else:
                        fatal = fatal or outcome
                stored = set(store(written)) if written else set()
                for id_, _ in written:
                    if id_ in stored:
                        described.append(id_)
                    else:
                        skipped.append(Skipped(source=id_, reason="it was described (or removed) meanwhile"))
                bar.update(len(batch))
                if fatal is not None:
                    raise fatal
    finally:
        bar.close()
    return DescribeResult(described=described, skipped=skipped)


def _describe(describer: ImageDescriber, record: Record) -> Answer | Skipped | Exception:
    """The description of one image, why it has none, or the error that should stop the run.

    Errors are returned rather than raised so that the rest of the batch is still stored.
    """
    try:
        answer = describer.describe_image(record.image_path)  # type: ignore[arg-type]
    except (ImageError, AnswererBadRequestError) as exc:  # this image only: go on with the others
        return Skipped(source=record.id, reason=str(exc))
    except Exception as exc:
        return exc
    if not answer.text.strip():
        return Skipped(source=record.id, reason=f"{answer.model or 'the describer'} wrote an empty description")
    return answer


def machine_written(record: Record, answer: Answer) -> Record | None:
    """``record`` with the model's description, or ``None`` if it has one by now."""
    if not needs_description(record):
        return None  # a person (or another run) got there first: never overwrite
    metadata: dict[str, Any] = {**record.metadata, SOURCE_KEY: MACHINE, MODEL_KEY: answer.model}
    return attrs.evolve(record, description=answer.text.strip(), metadata=metadata)
