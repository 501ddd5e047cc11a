"""Every checkpoint of a run, in one place: reading, writing, which to keep, which to resume from.

* **Reading**: always weights-only, every failure naming the file and what it is
  (:func:`read_checkpoint_any`); OpenGait's checkpoints are accepted wherever ours are
  (:func:`load_opengait_weights`, the importer's entry). :func:`network_weights` and
  :func:`load_weights` are the one place the module's ``net.`` prefix is stripped and the
  tensors loaded.
* **The network of a checkpoint**: every checkpoint of ``GaitGLModule`` stores the resolved run
  config under ``gaitgl.config``, so a checkpoint is enough to know the architecture
  (:func:`load_network`; ``task=extract`` and the notebooks use it instead of asking the user to
  repeat the model overrides of the run).
* **Writing**: through a temporary file renamed into place (:class:`AtomicCheckpointIO`): a kill
  mid-write leaves the previous file intact. Step checkpoints (``checkpoint_every`` steps, the
  last ``checkpoint_keep`` kept: no failure loses more training than that) are Lightning's
  ``ModelCheckpoint`` (``conf/callbacks/default.yaml``); :class:`BestCheckpoint` keeps the best
  evaluation (or the latest, without a rank-1) and ``last.ckpt``; :func:`save_stop_checkpoint`
  the state of the step a signal or a failure stopped.
* **Resuming**: ``ckpt_path`` (:func:`resolve_ckpt_path`), a requeued SLURM job's own newest
  checkpoint (:func:`requeued_checkpoint`), checked against the network before anything is
  written (:func:`resumable_step`); ``init_weights`` starts a new run from another's weights
  (:func:`start_from`).

Why one module: a step, best, stop, failure or preemption checkpoint are all candidates of the
same ``ckpt_path=last``; their names and folders are decided here together.
"""

from __future__ import annotations

import copy
import logging
import os
import re
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch.callbacks import Checkpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO
from omegaconf import DictConfig, OmegaConf
from torch import nn

from gaitgl_lightning.errors import CheckpointError, MissingCheckpointError
from gaitgl_lightning.fileio import atomic_path
from gaitgl_lightning.models.opengait import (
    OpenGaitCheckpointError,
    load_opengait_state,
    opengait_num_classes,
    opengait_problems,
)

log = logging.getLogger(__name__)

#: The module's attribute that holds the network: its tensors are ``net.*`` in a checkpoint.
NET_PREFIX = "net."


@dataclass
class LoadedNetwork:
    """The network with its trained weights (in eval mode), the run config, the step."""

    net: nn.Module
    config: DictConfig
    step: int


def read_checkpoint_any(path: str | Path) -> tuple[str, dict[str, Any]]:
    """``(kind, dict)`` of a checkpoint file: ``lightning`` (ours) or ``opengait``.

    Always read with torch's weights-only loader (tensors and plain containers, never code):
    the package enforces it rather than relying on torch's default. Every failure names the
    file and what it is: missing, empty, truncated, not a torch checkpoint, holding objects the
    weights-only loader refuses, or a torch file of another kind.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingCheckpointError(f"{path}: no checkpoint file here")
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(f"{path}: empty file (0 bytes), not a checkpoint")
    with path.open("rb") as f:
        head = f.read(4)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for a damaged or foreign file
        text = str(err)
        first = text.splitlines()[0][:200] if text else type(err).__name__
        if head.startswith(b"PK") and not zipfile.is_zipfile(path):  # its end is missing
            raise CheckpointError(
                f"{path}: truncated checkpoint ({size} bytes; the zip archive is cut short): "
                "copy it again, or take an earlier checkpoint"
            ) from err
        if "Unsupported global" in text:
            found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
            what = found.group(1) if found else "objects other than tensors and containers"
            raise CheckpointError(
                f"{path}: holds {what}, which the weights-only loader refuses (it never runs "
                "code from a file), so it is not a checkpoint this package reads"
            ) from err
        raise CheckpointError(
            f"{path}: not a torch checkpoint ({type(err).__name__}: {first})"
        ) from err
    if isinstance(state, dict) and "state_dict" in state:
        return "lightning", state
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        return "opengait", state
    keys = sorted(map(str, state))[:8] if isinstance(state, dict) else type(state).__name__
    raise CheckpointError(
        f"{path}: a torch file but not a checkpoint of this package or of OpenGait "
        f"(no 'state_dict' or 'model' entry; it holds {keys})"
    )


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint of this package (Lightning), read weights-only; an OpenGait file is named
    as such, with what to do instead."""
    kind, state = read_checkpoint_any(path)
    if kind == "opengait":
        raise CheckpointError(
            f"{path}: an OpenGait checkpoint, not one of this package: evaluate it with "
            "task=eval model=opengait_gaitgl (or opengait_gaitgl_large), embed with "
            "task=extract, or start training from it with init_weights=<file>"
        )
    return state


def checkpoint_num_classes(kind: str, state: Mapping[str, Any]) -> int | None:
    """The number of training classes a checkpoint's classifier fixes (None: it fixes none)."""
    if kind == "opengait":
        return opengait_num_classes(state)
    config = (state.get("gaitgl") or {}).get("config") or {}
    stored = (config.get("dataset") or {}).get("num_classes")
    if stored is not None:
        return int(stored)
    weight = state["state_dict"].get("net.head.classifier.fc_bin")
    return None if weight is None else int(weight.shape[-1])


def opengait_model_configs() -> list[str]:
    """The shipped model configs built like OpenGait's GaitGL (``conf/model/opengait_*``)."""
    from gaitgl_lightning import config_dir

    return sorted(p.stem for p in (config_dir() / "model").glob("opengait_*.yaml"))


def fitting_opengait_configs(state: Mapping[str, Any], num_classes: int) -> list[str]:
    """Which ``opengait_*`` model configs an OpenGait checkpoint's tensors fit exactly."""
    from gaitgl_lightning import group_config

    fits = []
    for name in opengait_model_configs():
        cfg = group_config("model", name)
        for head in ("bn", "bnneck"):
            cfg.head = head
            try:
                net = instantiate(cfg, num_classes=num_classes)
                problems, _ = opengait_problems(net, state, "")
            except Exception:  # a config that cannot even be built for this checkpoint
                continue
            if not problems:
                fits.append(name if head == "bn" else f"{name} model.head=bnneck")
    return fits


def load_opengait_weights(
    net: nn.Module, path: str | Path, state: Mapping[str, Any], *, classifier: bool = True
) -> None:
    """Load an OpenGait checkpoint into ``net``; on a mismatch the error names the model
    config that fits the checkpoint (or says that none of the shipped ones does)."""
    problems, _ = opengait_problems(net, state, str(path), classifier=classifier)  # type: ignore[arg-type]
    if problems:
        classes = opengait_num_classes(state) or 1
        fits = fitting_opengait_configs(state, classes)
        hint = (
            f"use model={fits[0]}"
            if fits
            else "none of the shipped opengait_* model configs fits it: write a model config "
            "with its stages"
        )
        log.info("%s: differences from the model config:\n%s", path, "\n".join(problems))
        raise OpenGaitCheckpointError(
            f"{path}: an OpenGait checkpoint that does not fit this model config "
            f"({len(problems)} differences, e.g. {problems[0].strip()}); {hint}"
        )
    load_opengait_state(net, state, str(path), classifier=classifier)  # type: ignore[arg-type]


def network_weights(state: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The network's tensors of a checkpoint of ours, named as the network names them."""
    cut = len(NET_PREFIX)
    return {k[cut:]: v for k, v in state["state_dict"].items() if k.startswith(NET_PREFIX)}


def load_weights(
    net: nn.Module, path: str | Path, weights: Mapping[str, torch.Tensor], strict: bool = True
) -> Any:
    """Load ``weights`` (:func:`network_weights`) into ``net``; a mismatch names the file."""
    try:
        return net.load_state_dict(weights, strict=strict)
    except RuntimeError as err:
        raise CheckpointError(f"{path}: weights do not fit the model config: {err}") from err


def load_network(
    path: str | Path, fallback_config: Mapping[str, Any] | DictConfig | None = None
) -> LoadedNetwork:
    """Instantiate ``config.model`` of the checkpoint and load its ``net.*`` weights.

    ``fallback_config`` is used for a checkpoint without a stored config (e.g. written by other
    code, or OpenGait's, whose architecture is the fallback's ``model``); without either, the
    architecture is unknown and this raises.
    """
    kind, state = read_checkpoint_any(path)
    stored = None if kind == "opengait" else (state.get("gaitgl") or {}).get("config")
    if stored is None and fallback_config is None:
        raise CheckpointError(f"{path}: the checkpoint holds no run config (gaitgl.config)")
    source: Any = stored if stored is not None else fallback_config
    config = OmegaConf.create(source)
    if not isinstance(config, DictConfig):
        raise CheckpointError(f"{path}: the stored run config is not a mapping")
    classes = checkpoint_num_classes(kind, state) or int(config.dataset.num_classes)
    net = instantiate(config.model, num_classes=classes)
    if kind == "opengait":
        load_opengait_weights(net, path, state)
        step = int(state.get("iteration", 0))
    else:
        load_weights(net, path, network_weights(state))
        step = int(state.get("global_step", 0))
    net.eval()
    return LoadedNetwork(net=net, config=config, step=step)


def load_initial_weights(net: nn.Module, path: str | Path) -> list[str]:
    """Start training from the weights of a checkpoint (ours or OpenGait's): every tensor that
    fits is loaded; the classifier is left as initialised when the class count differs
    (fine-tuning on another dataset). Returns the names left out."""
    kind, state = read_checkpoint_any(path)
    ours = net.state_dict()
    if kind == "opengait":
        same = opengait_num_classes(state) == _classes_of(ours)
        load_opengait_weights(net, path, state, classifier=same)
        return [] if same else [k for k in ours if k.startswith("head.classifier.")]
    weights = network_weights(state)
    left = [
        k
        for k, v in weights.items()
        if k.startswith("head.classifier.") and k in ours and ours[k].shape != v.shape
    ]
    fitting = {k: v for k, v in weights.items() if k not in left}
    missing, unexpected = load_weights(net, path, fitting, strict=False)
    problems = [k for k in missing if k not in left and k != "mask_draws"] + list(unexpected)
    if problems:
        raise CheckpointError(
            f"{path}: the checkpoint's network differs from the model config "
            f"(e.g. {problems[:4]}); use the model config it was trained with"
        )
    return left


def _classes_of(state: Mapping[str, torch.Tensor]) -> int | None:
    weight = state.get("head.classifier.fc_bin")
    return None if weight is None else int(weight.shape[-1])


def check_fits(net: nn.Module, ckpt: str, state: Mapping[str, Any], resuming: bool = False) -> None:
    """Name a model config that does not fit a checkpoint of ours before Lightning tries it
    (loaded into a copy: ``net``'s own weights stay as initialised)."""
    try:
        load_weights(copy.deepcopy(net), ckpt, network_weights(state))
    except CheckpointError as err:
        first = str(err.__cause__).splitlines()
        detail = first[1].strip() if len(first) > 1 else first[0]
        hint = (
            "resume the run with its own model config (resume=<run dir> with no model overrides)"
            if resuming
            else "use the model config stored in the checkpoint (gaitgl.config)"
        )
        raise CheckpointError(
            f"{ckpt}: the checkpoint's network does not fit this model config ({detail}); {hint}"
        ) from err.__cause__


def resumable_step(ckpt: str | None, net: nn.Module) -> int:
    """The step of the checkpoint to resume from (0 for a fresh run). It must be one of ours
    and fit the network (read weights-only first, so that a bad file is named before Lightning
    reads it, and before the run writes anything)."""
    if ckpt is None:
        return 0
    state = read_checkpoint(ckpt)
    check_fits(net, ckpt, state, resuming=True)
    return int(state.get("global_step", 0))


def start_from(path: str | None, net: nn.Module) -> None:
    """``init_weights=<file>``: start a new run from a checkpoint's weights (ours or OpenGait's),
    e.g. to fine-tune; unlike ``ckpt_path`` nothing else (step, optimizer) is taken."""
    if not path:
        return
    left = load_initial_weights(net, str(path))
    log.info(
        "initial weights from %s%s",
        path,
        f" (left as initialised: {', '.join(left)}; the class count differs)" if left else "",
    )


# --------------------------------------------------------------------------------- finding
def newest_checkpoint(directory: str | Path) -> Path | None:
    """The most recently written ``*.ckpt`` under ``directory`` (step checkpoints, ``last.ckpt``,
    the best one, one saved when an evaluation failed); temporary files are ignored."""
    root = Path(directory)
    if not root.is_dir():
        return None
    found = [p for p in root.rglob("*.ckpt") if not p.name.startswith(".") and p.is_file()]
    if not found:
        return None
    return max(found, key=lambda p: (p.stat().st_mtime_ns, p.name == "last.ckpt"))


def resolve_ckpt_path(ckpt: Any, run_dir: Path) -> str | None:
    """``ckpt_path``: ``last`` means the newest checkpoint of ``run_dir/checkpoints`` (a step
    checkpoint, ``last.ckpt``, one saved when an evaluation failed or a signal stopped the run);
    a run dir (or its ``checkpoints/``) means that run's newest checkpoint."""
    if ckpt in (None, ""):
        return None
    if str(ckpt) == "last":
        folder = run_dir / "checkpoints"
        newest = newest_checkpoint(folder)
        if newest is None:
            raise MissingCheckpointError(
                f"ckpt_path=last: no checkpoint in {folder}; resume a run with "
                "resume=<its run dir>, or give ckpt_path=<file>"
            )
        log.info("ckpt_path=last: resuming from %s", newest)
        return str(newest)
    path = Path(str(ckpt))
    if path.is_dir():
        folder = path / "checkpoints" if (path / "checkpoints").is_dir() else path
        newest = newest_checkpoint(folder)
        if newest is None:
            raise MissingCheckpointError(f"ckpt_path={ckpt}: a folder with no *.ckpt under it")
        log.info("ckpt_path=%s: the newest checkpoint there, %s", ckpt, newest)
        return str(newest)
    if not path.is_file():
        raise MissingCheckpointError(f"ckpt_path={ckpt}: no checkpoint file there")
    return str(ckpt)


def next_hpc_checkpoint(run_dir: Path) -> Path:
    """``hpc_ckpt_<n+1>.ckpt`` after the newest ``hpc_ckpt_<n>.ckpt`` of ``run_dir`` (the
    names Lightning looks for when a SLURM job starts)."""
    numbers = [
        int(m.group(1))
        for p in run_dir.glob("hpc_ckpt_*.ckpt")
        if (m := re.fullmatch(r"hpc_ckpt_(\d+)\.ckpt", p.name))
    ]
    return run_dir / f"hpc_ckpt_{max(numbers, default=0) + 1}.ckpt"


def requeued_checkpoint(run_dir: Path) -> str | None:
    """The checkpoint a requeued SLURM job resumes from when no ``ckpt_path`` is given: the
    newest of its run dir (``hpc_ckpt_*.ckpt`` and ``checkpoints/``); None for a first start.

    Why: Lightning itself looks only for ``hpc_ckpt_*.ckpt``, which exists only when a warning
    came during training; a job preempted without one (submitit's sweeps, whose own handler
    requeues with the original arguments), or warned after training, would start over."""
    try:
        restarts = int(os.environ.get("SLURM_RESTART_COUNT", "0"))
    except ValueError:
        restarts = 0
    if restarts < 1:
        return None
    found = list(run_dir.glob("hpc_ckpt_*.ckpt"))
    newest = newest_checkpoint(run_dir / "checkpoints")
    if newest is not None:
        found.append(newest)
    if not found:
        return None
    path = max(found, key=lambda p: p.stat().st_mtime_ns)
    log.info("requeued SLURM job (restart %d): resuming from %s", restarts, path)
    return str(path)


# --------------------------------------------------------------------------------- writing
class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's torch checkpoint writer, through a temporary file renamed into place."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        with atomic_path(path) as tmp:
            super().save_checkpoint(checkpoint, tmp, storage_options)


class BestCheckpoint(Checkpoint):
    """Keep the checkpoint of the best evaluation by ``monitor`` and, beside it, ``last.ckpt``;
    when an evaluation could not compute ``monitor`` (GREW's hidden test labels: no rank-1),
    keep the latest instead, named ``latest`` in place of the score
    (``step020000-latest.ckpt``), so that its name does not claim a score.

    A ``Checkpoint`` (Lightning's base class of checkpointing callbacks), so that it is the
    trainer's ``checkpoint_callback`` and runs after the other callbacks' hooks.

    Why our own: Lightning's ``ModelCheckpoint`` stops the run when the monitored metric is
    missing. The rules are its rules for ``save_top_k=1, save_last=True``: a strictly better
    score replaces the kept file (NaN counts as the worst), a name already taken gets ``-v<n>``,
    ``last.ckpt`` is written with each kept checkpoint, the file a run resumed from is never
    removed; the kept file and score travel in every checkpoint, so a resumed run compares with
    the best from before the stop. Evaluations outside ``fit`` and the sanity check keep nothing.
    """

    def __init__(
        self,
        dirpath: str,
        monitor: str = "val/rank1",
        mode: str = "max",
        filename: str = "step{step:06d}-r1_{score:.4f}",
        latest: str = "step{step:06d}-latest",
    ) -> None:
        if mode not in ("max", "min"):
            raise ValueError(f"BestCheckpoint: mode={mode!r} is not 'max' or 'min'")
        self.dirpath = str(dirpath)
        self.monitor, self.mode = monitor, mode
        self.filename, self.latest = filename, latest
        self.best_model_path = ""
        self.best_model_score: float | None = None
        self.last_model_path = ""
        self._saved_at = 0  # no evaluation before the first step keeps anything
        self._last_at = -1  # the step of the last.ckpt written at the final step

    @property
    def state_key(self) -> str:
        return f"{type(self).__qualname__}[{self.monitor}]"

    def state_dict(self) -> dict[str, Any]:
        return {
            "dirpath": self.dirpath,
            "best_model_path": self.best_model_path,
            "best_model_score": self.best_model_score,
            "last_model_path": self.last_model_path,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """A run resumed into another dir keeps only the best path (as ``ModelCheckpoint``): its
        first evaluation is kept whatever its score, and nothing of the other dir is removed."""
        self.best_model_path = state_dict["best_model_path"]
        if state_dict.get("dirpath") == self.dirpath:
            self.best_model_score = state_dict["best_model_score"]
            self.last_model_path = state_dict["last_model_path"]

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        step = trainer.global_step
        if trainer.state.fn != "fit" or trainer.sanity_checking or self._saved_at == step:
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            if self.best_model_score is None and not self.best_model_path:
                log.info(
                    "checkpoint selection: no %s in this evaluation (hidden labels?): keeping "
                    "the latest checkpoint instead of the best",
                    self.monitor,
                )
            self.best_model_path = self._replace(trainer, self.best_model_path, self.latest)
        else:
            score = float(value)
            worst = float("-inf") if self.mode == "max" else float("inf")
            score = worst if score != score else score  # NaN: the worst
            if not self._better(score):
                return
            self.best_model_score = score
            self.best_model_path = self._replace(trainer, self.best_model_path, self.filename)
        self.last_model_path = self._replace(trainer, self.last_model_path, "last")

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        """At the final step, ``last.ckpt``, before that step's evaluation. Why here and not
        after fit: Lightning counts a step's logging index up at the end of the step and, on
        restoring a checkpoint, adds the one that a save inside the step has not counted yet;
        saved after fit, the state already counts it, and a run trained on from it logged every
        step one ahead (a gap in the curves)."""
        if 0 < trainer.max_steps <= trainer.global_step and trainer.state.fn == "fit":
            self.last_model_path = os.path.join(self.dirpath, "last.ckpt")
            trainer.save_checkpoint(self.last_model_path)
            self._last_at = trainer.global_step

    def wrote_last_at(self, step: int) -> bool:
        """Whether ``last.ckpt`` holds step ``step``'s state (written at the final step)."""
        return self._last_at == step

    def _better(self, score: float) -> bool:
        best = self.best_model_score
        return best is None or (score > best if self.mode == "max" else score < best)

    def _replace(self, trainer: L.Trainer, previous: str, template: str) -> str:
        """Save under ``template`` (a free name), then remove ``previous``; returns the path."""
        fields = {"step": trainer.global_step, "score": self.best_model_score}
        name = template.format(**fields)
        path = os.path.join(self.dirpath, f"{name}.ckpt")
        version = 1
        while _exists_on_rank_zero(trainer, path) and path != previous:
            path = os.path.join(self.dirpath, f"{name}-v{version}.ckpt")
            version += 1
        self._saved_at = trainer.global_step
        trainer.save_checkpoint(path)
        if previous and self._removable(trainer, previous, path):
            trainer.strategy.remove_checkpoint(previous)
        return path

    def _removable(self, trainer: L.Trainer, previous: str, current: str) -> bool:
        """Not the file just written, not the one the run resumed from, only in ``dirpath``."""
        if previous == current:
            return False
        old = Path(previous).absolute()
        if trainer.ckpt_path is not None and old == Path(trainer.ckpt_path).absolute():
            return False
        return Path(self.dirpath).absolute() in old.parents


def _exists_on_rank_zero(trainer: L.Trainer, path: str) -> bool:
    """Whether ``path`` exists, as rank zero sees it (every rank takes the same decision)."""
    here = os.path.exists(path) if trainer.is_global_zero else False
    return bool(trainer.strategy.reduce_boolean_decision(here, all=False))


def kept_checkpoints(trainer: L.Trainer) -> BestCheckpoint | None:
    """The trainer's :class:`BestCheckpoint` (None when the callbacks config has none)."""
    found = [c for c in trainer.callbacks if isinstance(c, BestCheckpoint)]  # type: ignore[attr-defined]
    return found[0] if found else None


def checkpoints_dir(trainer: L.Trainer) -> Path:
    """The run's ``checkpoints/`` (where the best, ``last.ckpt`` and stop / failure files go)."""
    kept = kept_checkpoints(trainer)
    return Path(kept.dirpath) if kept else Path(trainer.default_root_dir) / "checkpoints"


def best_checkpoint(trainer: L.Trainer) -> str | None:
    """The kept checkpoint (best by rank-1, or the latest without one), None before any."""
    kept = kept_checkpoints(trainer)
    return (kept.best_model_path or None) if kept else None


def save_last(trainer: L.Trainer) -> None:
    """Write ``last.ckpt`` after fit, unless the final step wrote it (a run that reached
    ``max_steps``; ``BestCheckpoint.on_train_batch_end``). Runs on every rank; rank 0 writes."""
    kept = kept_checkpoints(trainer)
    if kept is not None and not kept.wrote_last_at(trainer.global_step):
        trainer.save_checkpoint(checkpoints_dir(trainer) / "last.ckpt")


def trained_weights(trainer: L.Trainer) -> str | None:
    """The ``ckpt_path`` that evaluates the weights fit ended with: ``None``, except in a SLURM job
    that was requeued. There Lightning reads ``None`` as the run dir's newest ``hpc_ckpt_*.ckpt``
    (how its auto-requeue resumes), an older state; a checkpoint of the final weights is named
    instead (``last.ckpt``, or one written now). Runs on every rank."""
    root = Path(str(trainer.default_root_dir))
    if not (SLURMEnvironment.detect() and any(root.glob("hpc_ckpt_*.ckpt"))):
        return None
    last = checkpoints_dir(trainer) / "last.ckpt"
    if kept_checkpoints(trainer) is None or not last.is_file():
        last = root / "final_weights.ckpt"
        trainer.save_checkpoint(last)
    return str(last)


def save_stop_checkpoint(trainer: L.Trainer, why: str) -> Path:
    """``checkpoints/<why>-step<N>.ckpt`` of the state at the end of this step (every rank
    calls this; rank 0 writes): what a signal (``interrupted``) or a failure (``failed``) keeps,
    so that ``ckpt_path=last`` resumes there."""
    path = checkpoints_dir(trainer) / f"{why}-step{trainer.global_step:06d}.ckpt"
    trainer.save_checkpoint(path)
    return path


def save_failure_checkpoint(trainer: L.Trainer) -> Path | None:
    """``checkpoints/failed-step<N>.ckpt`` when a failure stops training; None outside ``fit``."""
    if trainer.state.fn != "fit" or trainer.sanity_checking:
        return None
    return save_stop_checkpoint(trainer, "failed")
