"""The data modules: from a packed store (built on first use) to P x K training batches and
sharded evaluation batches, one class per dataset over a small base (as torchgeo does it).

``GaitDataModule`` (the base) holds what every dataset shares: ``prepare_data`` (one process
per node) builds the store when it is missing, ``setup`` (every rank) opens it, maps train
identities to class ids, checks the configuration against it and builds the datasets. A dataset
class says how its store is built and what its evaluation set holds beyond the partition's test
subjects: ``SyntheticDataModule`` renders the synthetic set; ``CasiaBDataModule``,
``OuMvlpDataModule``, ``GrewDataModule`` (distractors, a held-out validation split) and
``Gait3DDataModule`` (the partition's PROBE_SET) convert ``source``. The train loader's batch
sampler is rank-aware, so the Trainer must run with ``use_distributed_sampler=False``.
"""

from __future__ import annotations

import fcntl
import logging
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

import lightning as L
import numpy as np
from torch.utils.data import DataLoader

from gaitgl_lightning.data.datasets import EvalSequences, TrainClips, collate
from gaitgl_lightning.data.formats import load_partition
from gaitgl_lightning.data.meta import SequenceMeta
from gaitgl_lightning.data.prepare import generate_store, prepare_store, store_problem
from gaitgl_lightning.data.samplers import EvalShardSampler, PKBatchSampler, check_pk
from gaitgl_lightning.data.store import PackedStore, StoreDamaged, StoreError
from gaitgl_lightning.data.synthetic import SyntheticGait
from gaitgl_lightning.errors import ConfigError, MissingDataError

log = logging.getLogger(__name__)


class StreamLoader(DataLoader[Any]):
    """The train loader, resumable in Lightning's sense (``state_dict`` / ``load_state_dict``).

    Why: the P x K stream is a function of (seed, step), so the step alone puts a resumed run
    on the batches an uninterrupted one draws next. Its state is the sampler's seed and the
    number of batches training has consumed (the trainer's global step: the sampler itself runs
    ahead by what the loader prefetches); Lightning stores it in the checkpoint (``loops``) and
    hands it back before the first batch of a resumed run. A loader without this interface is
    one Lightning warns about on resume ("dataloader is not resumable").
    """

    def __init__(self, *args: Any, position: Callable[[], int] | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.position = position

    def state_dict(self) -> dict[str, Any]:
        sampler = self.batch_sampler
        assert isinstance(sampler, PKBatchSampler)
        state = sampler.state_dict()
        if self.position is not None:
            state["step"] = int(self.position())
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        sampler = self.batch_sampler
        assert isinstance(sampler, PKBatchSampler)
        sampler.seed, sampler.step = int(state["seed"]), int(state["step"])


@contextmanager
def store_lock(store_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``<store_dir>.lock`` (an ``flock``, released if the process
    dies): separate processes must never write one store at the same time."""
    store_dir.parent.mkdir(parents=True, exist_ok=True)
    with open(store_dir.parent / f"{store_dir.name}.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class GaitDataModule(L.LightningDataModule):
    """What every gait dataset shares (a dataset is a subclass: see the module docstring).

    Args:
        store: the packed store directory (built by ``prepare_data`` when missing).
        num_classes: number of training identities; checked against the partition.
        protocol: evaluation protocol, ``{"name": ..., **options}``.
        P, K: identities per batch and sequences per identity (the global batch).
        frames: frames per training clip; ``sample_type``: ``fixed_ordered`` / ``fixed_unordered``.
        height: aligned frame height (64 paper, 128 Gait3D, 32 the synthetic default).
        partition: a partition JSON path or a shipped name; None uses the store's own.
        sampling_seed: seed of the training stream (the order of the P x K batches): the
            training seed's part in the data (configs: ``${seed}``).

    ``protocol`` is the one place the evaluation protocol comes from: the dataset config's
    node, plus what the partition fixes (Gait3D's PROBE_SET).
    """

    #: The dataset's name (messages, the store's index, the shipped partition of that name).
    dataset_name: ClassVar[str] = ""

    def __init__(
        self,
        store: str,
        num_classes: int,
        protocol: Mapping[str, Any],
        P: int,
        K: int,
        frames: int = 30,
        sample_type: str = "fixed_ordered",
        height: int = 64,
        partition: str | None = None,
        num_workers: int = 2,
        eval_batch_size: int = 8,
        eval_max_frames: int | None = None,
        prepare_workers: int = 2,
        sampling_seed: int = 0,
    ) -> None:
        super().__init__()
        self.store_dir = Path(str(store))
        self.num_classes = int(num_classes)
        self._protocol = dict(protocol)
        self.P, self.K = int(P), int(K)
        self.frames, self.sample_type, self.height = int(frames), str(sample_type), int(height)
        self.partition_file = partition
        self.num_workers, self.prepare_workers = int(num_workers), int(prepare_workers)
        self.eval_batch_size, self.eval_max_frames = int(eval_batch_size), eval_max_frames
        self.sampling_seed = int(sampling_seed)
        self.store: PackedStore | None = None
        self.eval_meta: SequenceMeta  # set by setup()

    # ------------------------------------------------------------------------- preparation
    def prepare_data(self) -> None:
        """Build the store when it is missing, once per node; jobs that share the data dir (a
        sweep's SLURM jobs) take turns, and the later ones find the store done."""
        with store_lock(self.store_dir):
            problem = store_problem(self.store_dir)
            if problem is not None:
                self.build_store(problem)

    def build_store(self, problem: StoreError) -> None:
        """Build the missing (or unfinished, or damaged: ``problem``) store."""
        raise NotImplementedError(f"{type(self).__name__} does not say how to build its store")

    # ------------------------------------------------------------------------- dataset hooks
    def eval_subjects(self, partition: Mapping[str, list[str]]) -> list[str]:
        """The subjects of the evaluation set (before ``held_out``): the partition's test set."""
        return list(partition["TEST_SET"])

    def held_out(self, partition: Mapping[str, list[str]], present: set[str]) -> list[str]:
        """Training identities kept out of training as a labelled validation split (none)."""
        return []

    def set_protocol(self, partition: Mapping[str, list[str]]) -> None:
        """Add what the partition fixes to the evaluation protocol (nothing by default)."""

    # ------------------------------------------------------------------------- set-up
    def setup(self, stage: str | None = None) -> None:
        """Open the store, derive labels and splits, and check the configuration against them.

        Evaluation alone (``validate`` / ``test``: ``task=eval``) needs only the evaluation
        split on disk; the training identities are checked when training needs them.
        """
        if self.store is None:
            self._setup_eval()
        if stage in (None, "fit") and not hasattr(self, "train_dataset"):
            self._setup_train()

    def _partition(self, store: PackedStore) -> dict[str, list[str]]:
        return load_partition(self.partition_file) if self.partition_file else store.partition

    def _setup_eval(self) -> None:
        store = PackedStore(self.store_dir)
        partition = self._partition(store)
        present = {r.subject for r in store.records}
        test_ids = sorted(set(self.eval_subjects(partition)) & present)
        if not test_ids:
            raise ConfigError(
                f"{self.store_dir}: none of the partition's {len(partition['TEST_SET'])} test "
                f"subjects is in the store ({len(present)} subjects, e.g. "
                f"{sorted(present)[:3]}); check dataset.partition and dataset.source"
            )
        _say_partial(
            self.dataset_name,
            "test",
            len(set(partition["TEST_SET"]) & present),
            len(partition["TEST_SET"]),
        )
        eval_idx = store.select(test_ids)
        meta = store.meta(eval_idx)
        held = self.held_out(partition, present)
        if held:
            val_idx = store.select(held)
            eval_idx = [*eval_idx, *val_idx]
            meta = _concat(meta, _as_validation(store.meta(val_idx)))
        self.set_protocol(partition)
        self.eval_dataset = EvalSequences(store, eval_idx, self.eval_max_frames)
        self.eval_meta = meta
        self.store = store

    def train_identities(self) -> tuple[list[str], set[str]]:
        """The training identities in the store, and those held out by ``val_ids``
        (``setup`` must have opened the store)."""
        store = self.store
        assert store is not None
        partition = self._partition(store)
        present = {r.subject for r in store.records}
        held = set(self.held_out(partition, present))
        return sorted(set(partition["TRAIN_SET"]) & present - held), held

    def _setup_train(self) -> None:
        store = self.store
        assert store is not None
        partition = self._partition(store)
        train_ids, held = self.train_identities()
        if not train_ids:
            raise ConfigError(
                f"{self.store_dir}: the partition matches 0 train subjects of the store; "
                "check dataset.partition (task=eval needs only the test subjects)"
            )
        _say_partial(
            self.dataset_name,
            "train",
            len(train_ids) + len(held),
            len(partition["TRAIN_SET"]),
        )
        if len(train_ids) != self.num_classes:
            raise ConfigError(
                f"dataset {self.dataset_name}: num_classes={self.num_classes} but the train "
                f"partition has {len(train_ids)} identities in {self.store_dir}"
                + (f" ({len(held)} held out by dataset.val_ids)" if held else "")
                + f"; set dataset.num_classes={len(train_ids)}"
            )
        world = self.trainer.world_size if self.trainer is not None else 1
        check_pk(self.P, self.K, len(train_ids), world)
        label_of = {s: i for i, s in enumerate(train_ids)}
        train_idx = store.select(train_ids)
        self.train_dataset = TrainClips(
            store,
            train_idx,
            [label_of[store.records[i].subject] for i in train_idx],
            self.frames,
            self.sample_type,
        )

    @property
    def protocol(self) -> dict[str, Any]:
        return dict(self._protocol)

    # ------------------------------------------------------------------------- loaders
    def _rank_world(self) -> tuple[int, int]:
        if self.trainer is None:
            return 0, 1
        return self.trainer.global_rank, self.trainer.world_size

    def train_dataloader(self) -> DataLoader[Any]:
        rank, world = self._rank_world()
        # A resumed run continues the sampling where it stopped (the trainer's step).
        step = self.trainer.global_step if self.trainer is not None else 0
        sampler = PKBatchSampler(
            self.train_dataset.labels,
            self.P,
            self.K,
            self.sampling_seed,
            rank,
            world,
            start_step=step,
        )
        trainer = self.trainer
        return StreamLoader(
            self.train_dataset,
            batch_sampler=sampler,
            collate_fn=collate,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=False,
            position=(lambda: trainer.global_step) if trainer is not None else None,
        )

    def _eval_loader(self) -> DataLoader[Any]:
        rank, world = self._rank_world()
        lengths = [self.eval_dataset.length(i) for i in range(len(self.eval_dataset))]
        sampler = EvalShardSampler(lengths, self.eval_batch_size, rank, world)
        return DataLoader(
            self.eval_dataset,
            batch_sampler=sampler,
            collate_fn=collate,
            num_workers=self.num_workers,
        )

    def val_dataloader(self) -> DataLoader[Any]:
        return self._eval_loader()

    def test_dataloader(self) -> DataLoader[Any]:
        return self._eval_loader()

    # ------------------------------------------------------------------------- checkpoint
    def state_dict(self) -> dict[str, Any]:
        """The sampler stream: its seed and P x K (the position is the trainer's global step).
        The key stays ``seed`` (the sampling seed), as in checkpoints written before the split."""
        return {"seed": self.sampling_seed, "P": self.P, "K": self.K}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if (state_dict.get("P"), state_dict.get("K")) != (self.P, self.K):
            log.warning(
                "resuming with P x K = %d x %d, the checkpoint was trained with %s x %s",
                self.P,
                self.K,
                state_dict.get("P"),
                state_dict.get("K"),
            )
        self.sampling_seed = int(state_dict.get("seed", self.sampling_seed))


class SyntheticDataModule(GaitDataModule):
    """The embedded synthetic gait set (``data.synthetic``), rendered into the store on first use.

    Args:
        size: the preset (``tiny`` / ``default`` / ...; ``SyntheticGait.preset``).
        synthetic: generator options over the preset.
        seed: the data seed: it fixes the rendered set (and so its store path). Kept apart from
            the training seed (``sampling_seed``) so that a sweep over training seeds runs on
            the same data (docs/data.md, "Data seed and training seed").
    """

    dataset_name = "synthetic"

    def __init__(
        self,
        size: str = "default",
        synthetic: Mapping[str, Any] | None = None,
        seed: int = 0,
        **base: Any,
    ) -> None:
        super().__init__(**base)
        self.size, self.synthetic = str(size), dict(synthetic or {})
        self.seed = int(seed)

    def build_store(self, problem: StoreError) -> None:
        gen = SyntheticGait.preset(self.size, seed=self.seed, **self.synthetic)
        log.info(
            "generating the synthetic gait set (%s, %d sequences) into %s",
            self.size,
            len(gen),
            self.store_dir,
        )
        generate_store(gen, self.store_dir, self.height, self.prepare_workers)


class SourceDataModule(GaitDataModule):
    """A dataset as users hold it, converted from ``source`` into the store on first use.

    Args:
        source: a raw PNG tree or OpenGait pickle tree to convert when the store is missing.
        layout: layout of ``source`` (``auto`` detects).
        strict: refuse to finish the store when ``source`` holds damaged files or layout
            mistakes (default: skip them; ``<store>/prepare-report.json`` lists every one).
    """

    def __init__(
        self, source: str | None = None, layout: str = "auto", strict: bool = False, **base: Any
    ) -> None:
        super().__init__(**base)
        self.source, self.layout, self.strict = source, str(layout), bool(strict)

    def build_store(self, problem: StoreError) -> None:
        if not self.source and isinstance(problem, StoreDamaged):
            raise problem  # names the file, the damage and how to repair it
        if not self.source:
            raise MissingDataError(
                f"{self.store_dir}: no packed store for dataset {self.dataset_name!r}; give the "
                "raw data with dataset.source=<folder> (a PNG tree or OpenGait pickles), or point "
                "dataset.store at a prepared store"
            )
        if not Path(str(self.source)).is_dir():
            raise MissingDataError(
                f"dataset.source={self.source}: not a directory; give the folder of the raw "
                f"{self.dataset_name} data (a PNG tree or OpenGait pickles)"
            )
        partition = load_partition(str(self.partition_file or self.dataset_name))
        prepare_store(
            str(self.source),
            self.store_dir,
            self.dataset_name,
            partition,
            self.layout,
            self.height,
            self.prepare_workers,
            strict=self.strict,
        )


class CasiaBDataModule(SourceDataModule):
    """CASIA-B (124 subjects, 11 views, NM / BG / CL)."""

    dataset_name = "casia_b"


class OuMvlpDataModule(SourceDataModule):
    """OU-MVLP (10,307 subjects, 14 views, sequences 00 / 01)."""

    dataset_name = "oumvlp"


class GrewDataModule(SourceDataModule):
    """GREW (in the wild; the test labels are hidden).

    Args:
        distractors: add the distractor sequences (subject ``distractor``, GREW's harder
            setting) to the evaluation set; the ``grew`` protocol puts them in the gallery.
        val_ids: hold this many training identities out of training as a labelled validation
            split in the evaluation set (a rank-1 to watch while the test labels are hidden; a
            deviation from the recipe). Their sequences, in name order, become gallery ``01`` /
            ``02`` and probes ``03``, GREW's test naming.
    """

    dataset_name = "grew"

    def __init__(self, distractors: bool = False, val_ids: int = 0, **base: Any) -> None:
        super().__init__(**base)
        self.distractors, self.val_ids = bool(distractors), int(val_ids)

    def eval_subjects(self, partition: Mapping[str, list[str]]) -> list[str]:
        return super().eval_subjects(partition) + (["distractor"] if self.distractors else [])

    def held_out(self, partition: Mapping[str, list[str]], present: set[str]) -> list[str]:
        """The identities of the opt-in validation split: the last ``val_ids`` train ids."""
        if self.val_ids <= 0:
            return []
        train_ids = sorted(set(partition["TRAIN_SET"]) & present)
        if self.val_ids >= len(train_ids):
            raise ConfigError(
                f"dataset.val_ids={self.val_ids} but the train partition has only "
                f"{len(train_ids)} identities in {self.store_dir}"
            )
        return train_ids[-self.val_ids :]


class Gait3DDataModule(SourceDataModule):
    """Gait3D (4,000 subjects, in a supermarket): the official partition's PROBE_SET is the probe
    list of every evaluation (the partition is its only source)."""

    dataset_name = "gait3d"

    def set_protocol(self, partition: Mapping[str, list[str]]) -> None:
        if "PROBE_SET" not in partition:
            return
        if "probe_set" in self._protocol:
            raise ConfigError(
                f"dataset.protocol.probe_set is set and the partition "
                f"{self.partition_file or 'of the store'} has a PROBE_SET: the probes would "
                "have two sources; drop dataset.protocol.probe_set (the partition's list is "
                "the benchmark's)"
            )
        self._protocol["probe_set"] = list(partition["PROBE_SET"])
        self._protocol["probe_set_name"] = (
            f"PROBE_SET of {self.partition_file or 'the store partition'} "
            f"({len(partition['PROBE_SET'])} entries)"
        )


DATA_MODULES: dict[str, type[GaitDataModule]] = {
    cls.dataset_name: cls
    for cls in (
        SyntheticDataModule,
        CasiaBDataModule,
        OuMvlpDataModule,
        GrewDataModule,
        Gait3DDataModule,
    )
}


def data_module_from_config(config: Mapping[str, Any]) -> GaitDataModule:
    """Instantiate a ``dataset`` config node, also one saved before there was one data module
    per dataset (``_target_`` the base class, the dataset in ``name``): a checkpoint's config
    from then still opens its data (the analysis helpers read old runs)."""
    from hydra.utils import instantiate

    node = dict(config)
    if str(node.get("_target_", "")).endswith(".GaitDataModule") and "name" in node:
        name = str(node.pop("name"))
        if name not in DATA_MODULES:
            raise ConfigError(
                f"dataset {name!r} (a config from before one data module per dataset): no data "
                f"module of that name ({sorted(DATA_MODULES)}); set its _target_ to its class"
            )
        cls = DATA_MODULES[name]
        node["_target_"] = f"{cls.__module__}.{cls.__qualname__}"
    module = instantiate(node, _recursive_=False)
    assert isinstance(module, GaitDataModule)
    return module


def _say_partial(dataset: str, split: str, found: int, listed: int) -> None:
    """A partial download (fewer subjects than the partition lists) is fine; say so."""
    if found < listed:
        log.warning(
            "%s: %d of the %d %s subjects of the partition are in the store (a partial "
            "download?); continuing with those",
            dataset,
            found,
            listed,
            split,
        )


def _as_validation(meta: SequenceMeta) -> SequenceMeta:
    """Name held-out training sequences as GREW names its test set: per subject, in name
    order, the first two are gallery ``01`` / ``02`` (one when there are only two), the rest
    probes ``03``."""
    types = np.empty(len(meta), dtype=object)
    for subject in np.unique(meta.subjects):
        rows = np.flatnonzero(meta.subjects == subject)
        rows = rows[np.argsort(meta.views[rows], kind="stable")]
        n_gallery = min(2, max(1, len(rows) - 1))
        for k, row in enumerate(rows):
            types[row] = f"{k + 1:02d}" if k < n_gallery else "03"
    return SequenceMeta(meta.subjects, types.astype(str), meta.views)


def _concat(a: SequenceMeta, b: SequenceMeta) -> SequenceMeta:
    return SequenceMeta(
        *(np.concatenate([getattr(a, c), getattr(b, c)]) for c in ("subjects", "types", "views"))
    )
