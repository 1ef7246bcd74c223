"""The driver of an ingest on a Ray cluster.

The driver opens the knowledge base (its writer), lists the source, and builds one Ray Data
pipeline: reading tasks hash and decode the images (`workers.read_images`), an actor pool runs the
model (`workers.EmbeddingActor`, one per worker), and the driver takes the embedded batches as
they come and commits each one through the knowledge base's own commit (vectors, records and,
for a local knowledge base, its journal together, or none of them). Back-pressure: each actor
holds at most ``2`` batches, the reading tasks are capped at ``readers`` at a time, and the driver
prefetches at most ``max_in_flight`` embedded batches; Ray Data's streaming executor stops
producing while those are full, so memory is bounded whatever the source's size.

Exactly once: an image's id is the hash of its bytes. Ids already in the knowledge base (in
both its vector store and its description store) are skipped by the reading tasks, and an id
met twice in one run is stored once. A driver killed midway leaves whole batches stored (the
stores' writes replace an id, so a batch written halfway is written again); running the same
ingest again embeds only what is missing. A worker killed mid-batch returns nothing for it; Ray
restarts the actor and runs the batch again. Actors are restarted without limit (a long ingest
on preemptible machines loses many), but a batch runs at most ``BATCH_ATTEMPTS`` times: one
that kills every worker it meets (an image that exhausts the memory, a decoder that crashes)
stops the ingest with an error instead of looping, what was stored staying stored.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import time
import warnings
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import attrs
import numpy as np
from attrs import frozen

from multimodal_rag.errors import BackendConnectionError, BackendError, InvalidInputError
from multimodal_rag.types import AddResult, Record, Skipped

if TYPE_CHECKING:
    from types import ModuleType

    from multimodal_rag._ingest.pipeline import IngestItem
    from multimodal_rag._rag import MultimodalRAG

__all__ = ["RayIngestReport", "WorkerThroughput", "ingest_on_ray"]

logger = logging.getLogger(__name__)

#: Batches an embedding actor may hold at once (one running, one queued).
BATCHES_PER_ACTOR = 2
#: Times a batch is run when the worker running it dies (Ray Data's default: without limit).
BATCH_ATTEMPTS = 3
#: Seconds to wait for a cluster address to accept a connection before saying it does not.
CONNECT_TIMEOUT_S = 5.0


@frozen(kw_only=True)
class WorkerThroughput:
    """What one embedding actor did.

    Attributes:
        worker: ``host:pid`` of the actor's process (a restarted actor is a new one).
        runtime: The engine and precision its embedder chose (``"torch fp32"``).
        images: Images it embedded.
        seconds: Time it spent embedding them (decoding is the reading tasks').
    """

    worker: str
    runtime: str
    images: int
    seconds: float

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0


@frozen(kw_only=True)
class RayIngestReport:
    """What [`ingest_on_ray`][multimodal_rag._distributed.ingest.ingest_on_ray] did.

    Attributes:
        result: As ``add_directory`` reports it: ids, added, duplicates, skipped.
        seconds: Wall time from the start of the pipeline to the last batch stored.
        workers: Each embedding actor's share and speed.
        total: Images in the knowledge base afterwards.
        startup_seconds: From the start until a worker began embedding its first batch:
            starting the actors, loading the model and building its engine, a cost paid once
            per run.
        steady_images_per_s: Images stored per second from then on: the rate a longer run
            tends to.
    """

    result: AddResult
    seconds: float
    workers: tuple[WorkerThroughput, ...]
    total: int
    startup_seconds: float = 0.0
    steady_images_per_s: float = 0.0

    @property
    def images_per_s(self) -> float:
        """Images embedded and stored per second, overall."""
        return len(self.result.added) / self.seconds if self.seconds > 0 else 0.0


def ingest_on_ray(
    kb: str | os.PathLike[str],
    source: str | os.PathLike[str],
    *,
    address: str = "auto",
    descriptions: str | os.PathLike[str] | None = None,
    recursive: bool = True,
    allow_outside: bool = False,
    actors: int | None = None,
    cpus_per_actor: float = 1.0,
    gpus_per_actor: float = 0.0,
    readers: int | None = None,
    batch_size: int = 32,
    max_in_flight: int = 4,
    engine: str | None = None,
    precision: str | None = None,
    allow_modules: Iterable[str] = (),
    progress: bool | None = None,
) -> RayIngestReport:
    """Index every image under ``source`` into the knowledge base ``kb`` on a Ray cluster.

    The knowledge base must exist (``multimodal-rag index``, ``MultimodalRAG.create``); its
    embedder is rebuilt on each worker from its kind and settings. Milvus and PostgreSQL
    are the stores this is made for; a local knowledge base works too, written by the
    driver alone, as every knowledge base is (``docs/scale-out.md``).

    Args:
        kb: The knowledge-base directory.
        source: Folder of images, or a bucket's URL (as for ``add_directory``); the workers
            read the files themselves, so each needs the bucket's credentials in its own
            environment, or the folder at the same path.
        address: The cluster: ``"auto"`` (``$RAY_ADDRESS``, or the cluster started on this
            machine by ``ray start``), ``"HOST:PORT"`` of its head, or ``"ray://HOST:PORT"``
            (Ray Client). When this process is already connected to Ray, that connection is used.
        descriptions: JSON Lines of ``{"image_path", "description", ...}``.
        recursive: Include subfolders.
        allow_outside: Follow symlinks and descriptions entries that lead outside ``source``.
        actors: Embedding actors (one model each); by default as many as the cluster's CPUs
            (or GPUs, with ``gpus_per_actor``) hold.
        cpus_per_actor: CPUs Ray reserves for each actor.
        gpus_per_actor: GPUs Ray reserves for each actor (``1`` puts each on its own GPU).
        readers: Reading tasks running at once (by default two per actor); they reserve no CPU.
        batch_size: Images per batch (read, embedded and stored together).
        max_in_flight: Embedded batches the driver lets wait for it before the pipeline pauses.
        engine: The engine each worker's embedder runs on, instead of the knowledge base's.
        precision: The precision each worker asks for (``"auto"``: measured there).
        allow_modules: Packages whose classes the manifest may name (custom backends).
        progress: Show a progress bar with images/s per worker and overall (default: on a terminal).

    Raises:
        MissingDependencyError: Ray is not installed (the ``ray`` extra).
        BackendConnectionError: No Ray cluster at ``address``.
        KnowledgeBaseNotFoundError: No knowledge base at ``kb``.
        InvalidInputError: ``source`` is not a folder, a bad descriptions file, or bad settings.
        EmbedderMismatchError: A worker built an embedder with other weights.
        BackendError: A batch killed the worker running it ``BATCH_ATTEMPTS`` times; the
            batches stored before stay stored.
    """
    from multimodal_rag._extras import require
    from multimodal_rag._rag import MultimodalRAG

    ray = require("ray", user="the ingest on Ray (--ray)", extra="ray")
    require("ray.data", user="the ingest on Ray (--ray)", extra="ray")
    _check_settings(
        actors=actors,
        cpus_per_actor=cpus_per_actor,
        gpus_per_actor=gpus_per_actor,
        readers=readers,
        batch_size=batch_size,
        max_in_flight=max_in_flight,
    )
    allow_modules = list(allow_modules)
    with MultimodalRAG.open(kb, allow_modules=allow_modules) as rag:
        rag._state.check_writable()
        items, refused = _list_source(
            source,
            descriptions=descriptions,
            recursive=recursive,
            allow_outside=allow_outside,
            progress=progress,
        )
        with _ray_notices_hidden():
            started_ray = connect(ray, address)
            try:
                report = _Run(rag, items, progress=progress).execute(
                    ray,
                    actors=actors,
                    cpus_per_actor=cpus_per_actor,
                    gpus_per_actor=gpus_per_actor,
                    readers=readers,
                    batch_size=batch_size,
                    max_in_flight=max_in_flight,
                    engine=engine,
                    precision=precision,
                    allow_modules=allow_modules,
                )
            finally:
                if started_ray:
                    ray.shutdown()
    if refused:
        result = report.result
        report = attrs.evolve(
            report, result=attrs.evolve(result, skipped=(*refused, *result.skipped))
        )
    return report


def _list_source(
    source: str | os.PathLike[str],
    *,
    descriptions: str | os.PathLike[str] | None,
    recursive: bool,
    allow_outside: bool,
    progress: bool | None,
) -> tuple[list[IngestItem], list[Skipped]]:
    """The images to ingest and those refused unopened (a folder, or a bucket listed page by
    page): the one place the Ray path meets the listing of a source. The whole listing is
    taken before the pipeline starts: Ray Data splits it into blocks of ``batch_size``."""
    from multimodal_rag._ingest.pipeline import items_from_directory

    items, refused = items_from_directory(
        source,
        descriptions=descriptions,
        recursive=recursive,
        allow_outside=allow_outside,
        progress=progress,
    )
    return list(items), refused


def connect(ray: ModuleType, address: str) -> bool:
    """Connect this process to the cluster at ``address``; whether this call did (and so
    should disconnect).

    Raises:
        BackendConnectionError: Nothing answers at ``address``, or ``"auto"`` finds no cluster.
    """
    if ray.is_initialized():
        return False
    if not isinstance(address, str) or not address.strip():
        raise InvalidInputError(
            f"a Ray address is 'auto', HOST:PORT or ray://HOST:PORT, got {address!r}"
        )
    if address != "auto":
        _check_reachable(address)
    try:
        ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = "on this machine or in $RAY_ADDRESS" if address == "auto" else f"at {address!r}"
        raise BackendConnectionError(
            f"cannot connect to a Ray cluster {where}: {exc}. Start one with `ray start --head` "
            "or pass the address of its head (--ray HOST:PORT); a cluster with token authentication "
            "also needs RAY_AUTH_MODE=token and its token (RAY_AUTH_TOKEN_PATH)"
        ) from exc
    return True


def _check_reachable(address: str) -> None:
    """Fail in seconds, not after Ray's own minute of retries, when nothing listens at ``address``."""
    parts = urlsplit(address if "://" in address else f"ray-gcs://{address}")
    try:
        host, port = parts.hostname, parts.port
    except ValueError:
        host, port = None, None
    if not host or port is None:
        raise InvalidInputError(
            f"a Ray address is 'auto', HOST:PORT or ray://HOST:PORT, got {address!r}"
        )
    try:
        socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        raise BackendConnectionError(
            f"no Ray cluster answers at {address!r} ({exc.strerror or exc}): start one with "
            "`ray start --head` there, or check the address"
        ) from exc


def _check_settings(
    *,
    actors: int | None,
    cpus_per_actor: float,
    gpus_per_actor: float,
    readers: int | None,
    batch_size: int,
    max_in_flight: int,
) -> None:
    for name, count in (
        ("actors", actors),
        ("readers", readers),
        ("batch_size", batch_size),
        ("max_in_flight", max_in_flight),
    ):
        if count is not None and (
            isinstance(count, bool) or not isinstance(count, int) or count < 1
        ):
            raise InvalidInputError(f"{name} must be a whole number of at least 1, got {count!r}")
    for name, amount in (("cpus_per_actor", cpus_per_actor), ("gpus_per_actor", gpus_per_actor)):
        if (
            isinstance(amount, bool)
            or not isinstance(amount, (int, float))
            or not math.isfinite(amount)
            or amount < 0
        ):
            raise InvalidInputError(f"{name} must be a number of at least 0, got {amount!r}")


class _Run:
    """One ingest's bookkeeping on the driver: what each listed image became."""

    def __init__(
        self, rag: MultimodalRAG, items: list[IngestItem], *, progress: bool | None
    ) -> None:
        from multimodal_rag._validation import check_record

        for item in items:  # a bad descriptions entry is refused before anything runs
            check_record(Record(id="-", description=item.description, metadata=item.metadata))
        self.rag = rag
        self.items = items
        self.progress = progress
        self.ids: dict[int, str] = {}
        self.added: list[int] = []
        self.duplicates: list[tuple[int, str]] = []
        self.skipped: list[tuple[int, str]] = []
        self.claimed: set[str] = set()
        self.workers: dict[str, list[Any]] = {}  # worker -> [runtime, images, seconds]
        self.started: list[float] = []  # when each batch began embedding (time.time())
        self.reads_text = rag._state.ocr_entry is not None

    def execute(
        self,
        ray: ModuleType,
        *,
        actors: int | None,
        cpus_per_actor: float,
        gpus_per_actor: float,
        readers: int | None,
        batch_size: int,
        max_in_flight: int,
        engine: str | None,
        precision: str | None,
        allow_modules: Sequence[str],
    ) -> RayIngestReport:
        from tqdm.auto import tqdm

        from multimodal_rag._distributed.workers import EmbeddingActor, FaultPlan, read_images
        from multimodal_rag._registry import kind_of

        if not self.items:
            return RayIngestReport(
                result=self._result(), seconds=0.0, workers=(), total=len(self.rag)
            )
        # Actors say when they begin embedding in wall-clock time: startup is measured from here.
        start, wall_start = time.perf_counter(), time.time()
        embedder = self.rag.embedder
        config = dict(embedder.config())
        config.update(
            {
                key: value
                for key, value in (("engine", engine), ("precision", precision))
                if value is not None
            }
        )
        decoding, shape = _decoding_of(embedder)
        actors = (
            actors if actors is not None else _default_actors(ray, cpus_per_actor, gpus_per_actor)
        )
        data = _quiet_data(ray)
        dataset = data.from_items(
            [{"pos": pos, "path": str(item.image)} for pos, item in enumerate(self.items)],
            override_num_blocks=max(1, math.ceil(len(self.items) / batch_size)),
        )
        # A batch is one block of at most ``batch_size`` images, from the listing to the store:
        # with batch_size=None neither step bundles blocks together.
        read = dataset.map_batches(
            read_images,
            fn_kwargs={"stored": ray.put(self._stored_ids()), "decoding": decoding},
            batch_size=None,
            batch_format="numpy",
            num_cpus=0,
            compute=data.TaskPoolStrategy(size=readers if readers is not None else 2 * actors),
        )
        embedded = read.map_batches(
            EmbeddingActor,
            fn_constructor_args=(kind_of(embedder), config),
            fn_constructor_kwargs={
                "fingerprint": embedder.fingerprint,
                "allow_modules": list(allow_modules),
                "pixel_shape": shape,
                "fault": FaultPlan.from_env(os.environ),
            },
            batch_size=None,
            batch_format="numpy",
            compute=data.ActorPoolStrategy(
                size=actors, max_tasks_in_flight_per_actor=BATCHES_PER_ACTOR
            ),
            num_cpus=cpus_per_actor,
            num_gpus=gpus_per_actor,
            max_task_retries=BATCH_ATTEMPTS - 1,
        )
        bar = tqdm(
            total=len(self.items),
            desc="embedding on Ray",
            unit="img",
            disable=None if self.progress is None else not self.progress,
        )
        with bar:
            batches = embedded.iter_batches(
                batch_size=None, batch_format="numpy", prefetch_batches=max_in_flight
            )
            try:
                for batch in batches:
                    self._take(batch)
                    bar.update(len(batch["pos"]))
                    bar.set_postfix_str(self._rates(time.perf_counter() - start), refresh=False)
            except ray.exceptions.RayActorError as exc:
                self.rag.save()
                raise BackendError(
                    f"a batch of images killed the embedding worker running it {BATCH_ATTEMPTS} "
                    "times (out of memory, or a crash in decoding or the model; see the Ray "
                    f"workers' logs); the ingest stopped with {len(self.added)} new images stored. "
                    "Running it again goes on where it stopped"
                ) from exc
        seconds, wall_end = time.perf_counter() - start, time.time()
        self.rag.save()
        embedding_from = min(self.started, default=wall_end)
        startup = max(0.0, embedding_from - wall_start)
        steady = len(self.added) / (wall_end - embedding_from) if wall_end > embedding_from else 0.0
        return RayIngestReport(
            result=self._result(),
            seconds=seconds,
            workers=self._throughputs(),
            total=len(self.rag),
            startup_seconds=startup,
            steady_images_per_s=steady,
        )

    def _stored_ids(self) -> np.ndarray:
        """Ids in both stores, sorted, as bytes: an id with a vector but no record (a driver
        killed between the two writes) is not done, and is embedded and written again."""
        vector_ids = self.rag.vector_store.ids()
        done: list[bytes] = []
        for start in range(0, len(vector_ids), 1000):
            chunk = vector_ids[start : start + 1000]
            found = self.rag.description_store.get_many(chunk)
            done += [id_.encode() for id_ in chunk if id_ in found]
        return np.array(sorted(done), dtype="S") if done else np.array([], dtype="S1")

    def _take(self, batch: dict[str, np.ndarray]) -> None:
        """Store one embedded batch, and note what happened to each of its images."""
        ids: list[str] = []
        rows: list[int] = []
        records: list[Record] = []
        for row, (pos, id_, state, reason) in enumerate(
            zip(batch["pos"], batch["id"], batch["state"], batch["reason"])
        ):
            pos, id_ = int(pos), str(id_)
            if state == "unreadable":
                self.skipped.append((pos, str(reason)))
                continue
            self.ids[pos] = id_
            if state == "stored" or id_ in self.claimed:
                self.duplicates.append((pos, id_))
                continue
            item = self.items[pos]
            self.claimed.add(id_)
            ids.append(id_)
            rows.append(row)
            records.append(
                Record(
                    id=id_,
                    image_path=item.image_path,
                    description=item.description,
                    metadata=item.metadata,
                )
            )
            self.added.append(pos)
        if ids:
            vectors = np.ascontiguousarray(np.asarray(batch["vector"], dtype=np.float32)[rows])
            self.rag._ingesting.commit_embedded(ids, vectors, records)
        # An actor gives its batch's embedding time on the batch's first row, 0 on the others.
        for worker, runtime, state, seconds in zip(
            batch["worker"], batch["runtime"], batch["state"], batch["seconds"]
        ):
            entry = self.workers.setdefault(str(worker), [str(runtime), 0, 0.0])
            entry[0] = str(runtime)
            entry[1] += state == "new"
            entry[2] += float(seconds)
        self.started += [float(t) for t in batch["started"] if t > 0]

    def _rates(self, elapsed: float) -> str:
        overall = len(self.added) / elapsed if elapsed > 0 else 0.0
        parts = [f"{overall:.1f} img/s"]
        parts += [
            f"{worker} {images / seconds:.1f}/s"
            for worker, (_, images, seconds) in sorted(self.workers.items())
            if seconds > 0
        ]
        return ", ".join(parts)

    def _throughputs(self) -> tuple[WorkerThroughput, ...]:
        return tuple(
            WorkerThroughput(worker=worker, runtime=runtime, images=images, seconds=seconds)
            for worker, (runtime, images, seconds) in sorted(self.workers.items())
        )

    def _result(self) -> AddResult:
        added = sorted(self.added)
        added_ids = [self.ids[pos] for pos in added]
        unread = (
            [
                Skipped(
                    source=self.items[pos].source,
                    reason="its text was not read on Ray: read it with `multimodal-rag ocr KB` (rag.read_text())",
                )
                for pos in added
            ]
            if self.reads_text
            else []
        )
        return AddResult(
            ids=[self.ids[pos] for pos in sorted(self.ids)],
            added=added_ids,
            duplicates=[(self.items[pos].source, id_) for pos, id_ in sorted(self.duplicates)],
            skipped=[
                Skipped(source=self.items[pos].source, reason=reason)
                for pos, reason in sorted(self.skipped)
            ],
            undescribed=[self.ids[pos] for pos in added if self.items[pos].description is None],
            unread=unread,
        )


@contextmanager
def _ray_notices_hidden() -> Iterator[None]:
    """Hide what Ray Data warns about itself (a deprecated setting its own defaults set) and its
    advice on sizing a small dataset's blocks: nothing the caller could act on. Ray Data
    takes ``max_task_retries`` only among its deprecated remote arguments (it has no named
    parameter for it yet) and warns, pointing at the call in this module."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"ray\.")
        warnings.filterwarnings("ignore", message="`ray_remote_args` is deprecated")
        warnings.filterwarnings("ignore", category=UserWarning, module=r"ray\.data\.")
        yield


def _decoding_of(embedder: Any) -> tuple[Any, tuple[int, ...] | None]:
    """How the reading tasks decode for ``embedder``: its own preprocessing where it has one
    (CLIP's, open_clip's), else ``None`` (its actor decodes the encoded bytes itself)."""
    from multimodal_rag._distributed.workers import Decoding

    preprocess = getattr(embedder, "preprocess", None)
    if preprocess is None or not callable(getattr(embedder, "embed_pixels", None)):
        return None, None
    from PIL import Image

    shape = tuple(np.asarray(preprocess.pixels(Image.new("RGB", (8, 8)))).shape)
    return Decoding(
        preprocess=preprocess,
        draft=bool(getattr(embedder, "draft", True)),
        max_pixels=int(embedder.max_pixels),
    ), shape


def _default_actors(ray: ModuleType, cpus_per_actor: float, gpus_per_actor: float) -> int:
    resources = ray.cluster_resources()
    if gpus_per_actor > 0:
        return max(1, int(resources.get("GPU", 0) // gpus_per_actor))
    return max(1, int(resources.get("CPU", 1) // max(cpus_per_actor, 1e-9)))


def _quiet_data(ray: ModuleType) -> Any:
    """Ray Data, without its own progress bars and logs (the driver shows one bar)."""
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.enable_operator_progress_bars = False
    context.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    return ray.data
