"""The tasks behind the command line: ``train``, ``eval``, ``extract`` and ``prepare``.

Each takes a composed Hydra config (a ``DictConfig``) and returns plain data, so that tests can
call them with a config from Hydra's compose API without going through ``@hydra.main``. A task
builds the objects (data module, module, Trainer with its callbacks) and calls the Trainer; which
checkpoint to resume from and which to keep is ``checkpoints``', the evaluation's result and its
reuse are ``evaluation.Evaluation``'s.
"""

from __future__ import annotations

import copy
import logging
import signal
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ProgressBar
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf, open_dict

from gaitgl_lightning import __version__
from gaitgl_lightning.console import print_run_summary, quiet_lightning
from gaitgl_lightning.datamodule import GaitDataModule
from gaitgl_lightning.errors import ConfigError, Stopped
from gaitgl_lightning.fileio import atomic_write_json, atomic_write_text
from gaitgl_lightning.module import GaitGLModule
from gaitgl_lightning.runtime import checkpoints
from gaitgl_lightning.runtime.averaging import evaluated_weights, load_checkpoint_average
from gaitgl_lightning.runtime.curves import continue_curves
from gaitgl_lightning.runtime.evaluation import Evaluation
from gaitgl_lightning.runtime.requeue import release_signal_handlers
from gaitgl_lightning.runtime.stopping import resume_hint
from gaitgl_lightning.sweepjobs import previous_result

log = logging.getLogger(__name__)

#: The run's fully resolved config, next to Hydra's unresolved ``config.yaml``: what analysis
#: reads, because ``${hydra:...}`` and the absolute paths only resolve inside the run.
RESOLVED_CONFIG = Path(".hydra") / "resolved.yaml"


# --------------------------------------------------------------------------------- helpers
def output_dir(cfg: DictConfig) -> Path:
    """The run's output dir (Hydra's, or ``paths.output_dir`` when composed without a run)."""
    return Path(str(cfg.paths.output_dir))


def _as_dict(node: Any) -> dict[str, Any]:
    """A resolved plain-dict copy of a config node (what checkpoints and loggers store)."""
    container = OmegaConf.to_container(node, resolve=True)
    if not isinstance(container, dict):
        raise TypeError(f"expected a mapping config node, got {type(container).__name__}")
    return {str(k): v for k, v in container.items()}


def build_datamodule(cfg: DictConfig) -> GaitDataModule:
    """Instantiate the data module of ``cfg.dataset``."""
    return instantiate(cfg.dataset, _recursive_=False)


def build_module(cfg: DictConfig, num_classes: int | None = None) -> GaitGLModule:
    """Instantiate network, loss and optimizer / scheduler factories into a ``GaitGLModule``.

    ``num_classes`` overrides the dataset's (``task=eval``: the checkpoint fixes it)."""
    classes = int(cfg.dataset.num_classes) if num_classes is None else int(num_classes)
    net = instantiate(cfg.model, num_classes=classes)
    loss = instantiate(cfg.loss)
    optimizer = instantiate(cfg.optimizer)
    scheduler = instantiate(cfg.scheduler) if cfg.get("scheduler") else None
    return GaitGLModule(
        net=net,
        loss=loss,
        optimizer=optimizer,
        scheduler=scheduler,
        seed=int(cfg.seed),
        run_config=_as_dict(cfg),
    )


def build_trainer(cfg: DictConfig, **overrides: Any) -> L.Trainer:
    """The Trainer with the configured callbacks and loggers, and the run's ``Evaluation``
    (what the module's validation and test steps feed; submission files go to the run dir)."""
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c]
    if not cfg.trainer.get("enable_progress_bar", True):
        callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)]
    callbacks.append(Evaluation(submission_dir=str(output_dir(cfg) / "submissions")))
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values() if c]
    kwargs: dict[str, Any] = {
        "callbacks": callbacks,
        "logger": loggers or False,
        "plugins": [checkpoints.AtomicCheckpointIO()],
    }
    kwargs.update(overrides)
    return instantiate(cfg.trainer, **kwargs)


def close_loggers() -> None:
    """End the W&B run of this job (multirun jobs share one process)."""
    try:
        import wandb
    except ImportError:  # pragma: no cover - wandb is a dependency
        return
    if wandb.run is not None:
        wandb.finish()


def _ckpt_path(cfg: DictConfig) -> str | None:
    """The checkpoint ``ckpt_path`` names (``checkpoints.resolve_ckpt_path``)."""
    return checkpoints.resolve_ckpt_path(cfg.get("ckpt_path"), output_dir(cfg))


# --------------------------------------------------------------------------------- tasks
def train(cfg: DictConfig) -> dict[str, Any]:
    """Fit by iterations, then evaluate the final and (optionally) the best checkpoint."""
    L.seed_everything(int(cfg.seed), workers=True)
    ckpt = _ckpt_path(cfg) or checkpoints.requeued_checkpoint(output_dir(cfg))
    datamodule = build_datamodule(cfg)
    module = build_module(cfg)
    # Checked before anything is written: a checkpoint that does not fit stops with one line.
    resumed_step = checkpoints.resumable_step(ckpt, module.net)
    trainer = build_trainer(cfg)
    evaluation = Evaluation.of(trainer)
    if ckpt is not None:
        continue_curves(trainer.loggers, output_dir(cfg), resumed_step)
    _log_setup(cfg, trainer)
    _save_resolved_config(cfg)
    try:
        checkpoints.start_from(cfg.get("init_weights"), module.net)
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt, weights_only=True)
        checkpoints.save_last(trainer)
        metrics: dict[str, Any] = {"version": __version__, "steps": trainer.global_step}
        metrics["final"] = evaluation.final(trainer, module, datamodule)
        metrics["final"]["weights"] = evaluated_weights(trainer)
        best = checkpoints.best_checkpoint(trainer)
        if cfg.get("eval_best", True) and best:
            # Lightning's test loop, logged as test/*: val/* only ever holds the weights of the
            # step it is logged at. Always run, also when the best is the final checkpoint, so
            # that every run's logs hold test/* the same way.
            metrics["best"] = evaluation.run(trainer.test, module, datamodule, ckpt_path=best)
            metrics["best"]["checkpoint"] = best
            metrics["best"]["weights"] = evaluated_weights(trainer)
        if cfg.get("baseline_gei", False):
            metrics["baseline_gei"] = _gei_baseline(datamodule, module)
        _add_mask_signature(metrics, module)
        _write_metrics(cfg, metrics)
        return metrics
    except SIGTERMException:
        # Lightning's own stop, outside fit's steps (the final evaluations): exit 128 + 15.
        line = f"stopped by SIGTERM after training; resume with: {resume_hint(output_dir(cfg))}"
        raise Stopped(signal.SIGTERM, line) from None
    finally:
        release_signal_handlers(trainer)
        close_loggers()


def _add_mask_signature(metrics: dict[str, Any], module: GaitGLModule) -> None:
    """``masks``: the network's effective masks (per masked layer: map size and what a pair
    drops), which the ablation report groups runs by (two ratios can drop the same rows)."""
    signature = getattr(module.net, "mask_signature", None)
    if callable(signature):
        metrics["masks"] = signature()


def _gei_baseline(datamodule: Any, module: GaitGLModule) -> dict[str, Any]:
    """The gait-energy-image nearest-neighbour baseline on the same evaluation split."""
    from gaitgl_lightning.data.gei import gei_embeddings
    from gaitgl_lightning.evaluation import evaluate

    datamodule.setup("validate")  # no-op unless fit ran in spawned processes (ddp_spawn)
    embeddings = gei_embeddings(datamodule.eval_dataset)
    protocol = dict(datamodule.protocol)
    name = protocol.pop("name")
    protocol["distance"] = "euc_flat"
    return evaluate(name, embeddings, datamodule.eval_meta, **protocol).to_dict()


@rank_zero_only
def _save_resolved_config(cfg: DictConfig) -> None:
    """``.hydra/resolved.yaml``; a resume keeps the run's and records itself beside it."""
    if not cfg.get("resume"):
        atomic_write_text(output_dir(cfg) / RESOLVED_CONFIG, OmegaConf.to_yaml(_as_dict(cfg)))
        return
    hydra_dir = output_dir(cfg) / ".hydra"
    number = 1 + sum(1 for _ in hydra_dir.glob("resume-*"))
    folder = hydra_dir / f"resume-{number}"
    while folder.exists():
        number += 1
        folder = hydra_dir / f"resume-{number}"
    try:
        overrides = list(HydraConfig.get().overrides.task)
    except ValueError:  # composed without @hydra.main
        overrides = []
    atomic_write_text(folder / "overrides.yaml", OmegaConf.to_yaml(OmegaConf.create(overrides)))
    atomic_write_text(folder / "config.yaml", OmegaConf.to_yaml(cfg))
    atomic_write_text(folder / "resolved.yaml", OmegaConf.to_yaml(_as_dict(cfg)))
    log.info("resumed run: this resume's config and overrides are in %s", folder)


#: What the numbers of ``metrics.json`` are: fractions, printed and plotted as percent.
METRICS_UNITS = "rank-1, mAP and hit rates as fractions in [0, 1] (printed and plotted as %)"


@rank_zero_only
def _write_metrics(cfg: DictConfig, metrics: Mapping[str, Any]) -> None:
    path = output_dir(cfg) / "metrics.json"
    atomic_write_json(path, {**metrics, "units": METRICS_UNITS})
    print_run_summary(metrics, output_dir(cfg), path)
    _to_log_file(metrics)


def _to_log_file(metrics: Mapping[str, Any]) -> None:
    """The results table into the run's log file (``cli.log``) too: the terminal's copy is
    gone with the terminal. Only the file handlers get it (the terminal has it already)."""
    import io

    from rich.console import Console

    from gaitgl_lightning.console import results_table

    table = results_table(metrics)
    files = [h for h in logging.getLogger().handlers if isinstance(h, logging.FileHandler)]
    if table is None or not files:
        return
    buffer = io.StringIO()
    Console(file=buffer, width=120, color_system=None).print(table)
    record = log.makeRecord(
        log.name, logging.INFO, __file__, 0, "results:\n%s", (buffer.getvalue().rstrip(),), None
    )
    for handler in files:
        handler.handle(record)


def recipe_deviations(cfg: DictConfig) -> list[str]:
    """How this run differs from its preset's reference recipe (P, K, iterations)."""
    reference = cfg.get("reference")
    if not reference:
        return []
    actual = {"P": cfg.dataset.P, "K": cfg.dataset.K, "max_steps": cfg.trainer.max_steps}
    return [
        f"{key}={actual[key]} (recipe {value})"
        for key, value in reference.items()
        if key in actual and actual[key] != value
    ]


@rank_zero_only
def _log_setup(cfg: DictConfig, trainer: L.Trainer) -> None:
    """Say what is being run: world size, global and per-rank batch."""
    p, k = int(cfg.dataset.get("P", 0)), int(cfg.dataset.get("K", 0))
    world = trainer.world_size
    log.info(
        "gaitgl_lightning %s: %s on %s; world size %d, global batch P x K = %d x %d = %d, "
        "per rank %s",
        __version__,
        cfg.get("name"),
        output_dir(cfg),
        world,
        p,
        k,
        p * k,
        (p * k) / world if world else "?",
    )
    deviations = recipe_deviations(cfg)
    if deviations:
        log.warning(
            "this run deviates from the preset's reference recipe: %s; reported numbers are "
            "not comparable with the paper's",
            ", ".join(deviations),
        )


def evaluate_checkpoint(cfg: DictConfig) -> dict[str, Any]:
    """``task=eval``: evaluate ``ckpt_path`` (ours, or an OpenGait ``.pt`` with a matching
    ``model=opengait_*``) on the dataset's protocol. Only the evaluation split needs to be on
    disk; the class count comes from the checkpoint."""
    ckpt = _ckpt_path(cfg)
    if ckpt is None:
        raise ConfigError("task=eval needs ckpt_path=<file> (or ckpt_path=last with its run dir)")
    kind, state = checkpoints.read_checkpoint_any(ckpt)
    step = int(state.get("iteration" if kind == "opengait" else "global_step", 0))
    _use_stored_model(cfg, ckpt, state if kind == "lightning" else {})
    datamodule = build_datamodule(cfg)
    module = build_module(cfg, num_classes=checkpoints.checkpoint_num_classes(kind, state))
    load_from: str | None = ckpt
    weights = str(cfg.get("eval_weights") or "trained")
    if kind == "opengait":
        checkpoints.load_opengait_weights(module.net, ckpt, state)
        load_from = None
    else:
        checkpoints.check_fits(module.net, ckpt, state)
    if load_checkpoint_average(module.net, ckpt, state, weights):
        load_from = None  # the network holds the checkpoint's average now
    del state
    trainer = build_trainer(cfg, logger=False)
    evaluation = Evaluation.of(trainer)
    evaluation.loaded_step = step  # outputs (a submission file) are keyed by the weights' step
    _save_resolved_config(cfg)
    try:
        metrics: dict[str, Any] = {"version": __version__, "checkpoint": ckpt, "format": kind}
        metrics["steps"] = step
        metrics["eval"] = evaluation.run(trainer.test, module, datamodule, ckpt_path=load_from)
        metrics["eval"]["weights"] = weights
        _add_mask_signature(metrics, module)
        _write_metrics(cfg, metrics)
        return metrics
    finally:
        close_loggers()


#: Mask settings that only act at test time, taken from the composed config on task=eval.
EVAL_TIME_MASK_KEYS = ("eval_mode", "eval_pairs")


def _use_stored_model(cfg: DictConfig, ckpt: str, state: Mapping[str, Any]) -> None:
    """Evaluate our checkpoint with the network it was trained with (its ``gaitgl.config``),
    as ``task=extract`` does, rather than the model config composed now."""
    stored = ((state.get("gaitgl") or {}).get("config") or {}).get("model")
    if not isinstance(stored, dict):
        return
    composed = _as_dict(cfg.model)
    stored = copy.deepcopy(stored)
    # The test-time local branch is an evaluation setting, not part of the trained network: the
    # one composed now wins (the eval_mode ablation evaluates one checkpoint both ways).
    for key in EVAL_TIME_MASK_KEYS:
        if key in (composed.get("mask") or {}) and isinstance(stored.get("mask"), dict):
            stored["mask"][key] = composed["mask"][key]
    if stored == composed:
        return
    log.info("%s: using the model config stored in the checkpoint (not the composed one)", ckpt)
    with open_dict(cfg):
        cfg.model = OmegaConf.create(stored)


def prepare(cfg: DictConfig) -> dict[str, Any]:
    """``task=prepare``: build the dataset's packed store from ``dataset.source`` (resumable)."""
    datamodule = build_datamodule(cfg)
    datamodule.prepare_data()
    datamodule.setup("test")  # a store of the test split alone is complete for task=eval
    store = datamodule.store
    assert store is not None  # setup() opened it
    train_ids, _ = datamodule.train_identities()
    info = {
        "store": str(datamodule.store_dir),
        "sequences": len(store),
        "skipped": store.skipped,
        "train_ids": len(train_ids),
        "eval_sequences": len(datamodule.eval_meta),
    }
    log.info("prepared %s", info)
    if not train_ids:
        log.info("the store holds no training subjects: it serves task=eval, not training")
    elif len(train_ids) != datamodule.num_classes:
        log.warning(
            "the store has %d training identities but dataset.num_classes=%d: set "
            "dataset.num_classes=%d before training",
            len(train_ids),
            datamodule.num_classes,
            len(train_ids),
        )
    return info


def extract(cfg: DictConfig) -> dict[str, Any]:
    """``task=extract``: embed ``extract.input`` (a folder of PNG silhouettes) with the network of
    ``ckpt_path``; rank against ``extract.gallery`` when given. Writes ``embeddings.npz``."""
    from gaitgl_lightning.runtime.extract import (
        embed_folders,
        rank_against,
        save_npz,
        sequence_folders,
    )

    ckpt = _ckpt_path(cfg)
    if ckpt is None:
        raise ConfigError("task=extract needs ckpt_path=<a trained checkpoint>")
    options: DictConfig = cfg.get("extract") or OmegaConf.create({})
    if not options.get("input"):
        raise ConfigError("task=extract needs extract.input=<folder of silhouette PNGs>")
    loaded = checkpoints.load_network(ckpt, fallback_config=cfg)
    net, run_cfg = loaded.net, loaded.config
    height = int(run_cfg.dataset.height)
    folders = sequence_folders(Path(str(options.input)))
    embeddings = embed_folders(net, folders, height)
    arrays: dict[str, Any] = {
        "embeddings": embeddings.numpy(),
        "names": np.asarray([str(f) for f in folders]),
    }
    result: dict[str, Any] = {"sequences": len(folders)}
    if options.get("gallery"):
        gallery_folders = sequence_folders(Path(str(options.gallery)))
        gallery = embed_folders(net, gallery_folders, height)
        index, dist = rank_against(embeddings, gallery, int(options.get("top", 5)))
        arrays.update(
            gallery_names=np.asarray([str(f) for f in gallery_folders]),
            rank_index=index,
            rank_distance=dist,
        )
        result["ranking"] = {
            str(f): [str(gallery_folders[j]) for j in row]
            for f, row in zip(folders, index, strict=True)
        }
        _print_ranking(folders, gallery_folders, index, dist)
    path = output_dir(cfg) / "embeddings.npz"
    save_npz(path, **arrays)
    result["file"] = str(path)
    log.info("wrote %s (%d sequences)", path, len(folders))
    return result


def _print_ranking(folders: list[Path], gallery: list[Path], index: Any, dist: Any) -> None:
    """The top-k gallery sequences of every input, nearest first, with their distances."""
    for folder, row, row_dist in zip(folders, index, dist, strict=True):
        ranked = ", ".join(
            f"{k}. {gallery[j].name} ({float(d):.4f})"
            for k, (j, d) in enumerate(zip(row, row_dist, strict=True), 1)
        )
        print(f"{folder.name}: {ranked}", flush=True)
        log.debug("ranking of %s: %s", folder, ranked)


TASKS: dict[str, Callable[[DictConfig], Any]] = {
    "train": train,
    "eval": evaluate_checkpoint,
    "prepare": prepare,
    "extract": extract,
}


def run_task(cfg: DictConfig) -> Any:
    """Dispatch on ``cfg.task``."""
    task = str(cfg.get("task", "train"))
    if task not in TASKS:
        raise ConfigError(f"task={task!r} is not one of {sorted(TASKS)}")
    torch.set_float32_matmul_precision("high")
    if cfg.get("threads"):
        # Floating-point sums are split by thread count, so a bit-reproducible sweep fixes it
        # (and two single-thread jobs side by side use 2 cores better than one job on two).
        torch.set_num_threads(int(cfg.threads))
    quiet_lightning()
    previous = previous_result(cfg, output_dir(cfg))
    if previous is not None:
        return previous
    return TASKS[task](cfg)
