"""Finished runs as records: their settings, final numbers and logs, from Hydra dirs or W&B.

A run is either a Hydra output dir (``.hydra/config.yaml`` + ``metrics.json``, as ``train``
writes it) or a W&B run folder alone (config and summary from the run file). Both become a
``RunInfo`` with a flat config and the final summary, so that a sweep can be tabulated the same
way whether it came from a Hydra multirun folder or from a set of W&B runs.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, cast

import pandas as pd
from omegaconf import DictConfig, ListConfig, OmegaConf

from gaitgl_lightning.analysis.history import CSV_FILE, load_history, wandb_dirs
from gaitgl_lightning.analysis.wandb_offline import is_wandb_run, load_wandb_run

#: Config keys / groups that differ between runs without being a setting of the experiment.
NOT_SETTINGS = (
    "paths",
    "hydra",
    "logger",
    "callbacks",
    "name",
    "sweep",
    "trainer.default_root_dir",
)

log = logging.getLogger(__name__)


@dataclass
class RunInfo:
    """One finished run: where it is, its resolved config, and what it measured.

    ``metrics`` is the run's ``metrics.json`` (``final`` / ``best`` / ``baseline_gei`` results)
    or, for a W&B-only run, ``{"final": {"summary": ...}}`` built from the W&B summary.
    """

    path: Path
    name: str
    config: dict[str, Any]
    metrics: dict[str, Any] = field(default_factory=dict)
    overrides: list[str] = field(default_factory=list)
    source: str = "hydra"
    #: What the user chose: Hydra's config-group choices (``model: tiny``) updated with the
    #: command-line overrides (``mask.ratio: 0.5``); empty for a W&B-only run.
    settings: dict[str, Any] = field(default_factory=dict)

    def setting(self, key: str) -> Any:
        """A chosen setting (group choice or override), else the config value at ``key``."""
        return self.settings[key] if key in self.settings else self.flat_config.get(key)

    @cached_property
    def flat_config(self) -> dict[str, Any]:
        """``{"mask.ratio": 0.25, "model.stages.0.channels": 16, ...}``."""
        return flatten(self.config)

    def summary(self, which: str = "final") -> dict[str, float]:
        """Flat metrics (fractions) of ``final``, ``best`` or ``baseline_gei``; empty if absent."""
        return {k: float(v) for k, v in (self.metrics.get(which) or {}).get("summary", {}).items()}

    def results_table(self) -> pd.DataFrame:
        """Rows ``final`` / ``best`` / ``baseline_gei`` (those present), metrics in percent."""
        rows = {w: self.summary(w) for w in ("final", "best", "baseline_gei") if self.summary(w)}
        return 100.0 * pd.DataFrame.from_dict(rows, orient="index")

    def result(self, which: str = "final") -> Any:
        """The full ``EvalResult`` of ``which`` (cross-view tables, rank-k curve), or None when
        the run only has a summary (a W&B-only run, a run evaluated in spawned processes)."""
        from gaitgl_lightning.evaluation import EvalResult

        data = self.metrics.get(which) or {}
        return EvalResult.from_dict(data) if "protocol" in data else None

    def history(self, prefer: str = "csv") -> pd.DataFrame:
        """The run's curves (see ``history.load_history``)."""
        return load_history(self.path, prefer=prefer)

    def checkpoint(self, which: str = "last") -> Path | None:
        """``last`` or ``best`` checkpoint file of a Hydra run, when it exists."""
        if which == "best":
            best = (self.metrics.get("best") or {}).get("checkpoint")
            if best and Path(best).is_file():
                return Path(best)
            local = sorted(self.path.glob("checkpoints/step*.ckpt"))
            return local[-1] if local else None
        last = self.path / "checkpoints" / "last.ckpt"
        return last if last.is_file() else None


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts / lists as dotted keys (list items by position, as Hydra overrides name them)."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        elif isinstance(value, (list, tuple)) and any(isinstance(v, Mapping) for v in value):
            flat.update(flatten({str(i): v for i, v in enumerate(value)}, f"{name}."))
        else:
            flat[name] = tuple(value) if isinstance(value, list) else value
    return flat


def _resolve(config: DictConfig) -> dict[str, Any]:
    """A run's config as plain data, for a run that predates ``.hydra/resolved.yaml``: each
    top-level key resolved where it can be outside its run, else kept as written (``${hydra:...}``
    and environment lookups only resolve inside the run)."""
    raw = OmegaConf.to_container(config, resolve=False)
    assert isinstance(raw, dict)
    resolved: dict[str, Any] = {}
    for key, written in raw.items():
        if "${hydra:" in json.dumps(written, default=str):
            # Only the run's own Hydra node resolves these; whatever Hydra config this process
            # holds (if any) would give another run's values.
            resolved[str(key)] = written
            continue
        try:
            value = config[key]
            resolved[str(key)] = (
                OmegaConf.to_container(value, resolve=True)
                if isinstance(value, (DictConfig, ListConfig))
                else value
            )
        except Exception:  # an interpolation of the run's own environment: keep it as text
            resolved[str(key)] = written
    return resolved


def _load_config(path: Path) -> dict[str, Any]:
    """The resolved config the run saved (``.hydra/resolved.yaml``), else ``config.yaml``
    resolved as far as it can be here (runs written before the resolved copy existed)."""
    for name, resolver in (("resolved.yaml", None), ("config.yaml", _resolve)):
        file = path / ".hydra" / name
        if not file.is_file():
            continue
        config = OmegaConf.load(file)
        if not isinstance(config, DictConfig):
            raise ValueError(f"{file}: not a mapping config")
        if resolver is not None:
            return resolver(config)
        data = OmegaConf.to_container(config, resolve=False)
        return {str(k): v for k, v in cast(dict, data).items()}
    raise FileNotFoundError(f"{path}: not a run dir (no .hydra/config.yaml)")


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return data


def load_hydra_run(path: str | Path) -> RunInfo:
    """A Hydra job dir: ``.hydra/config.yaml`` (+ ``hydra.yaml``, ``overrides.yaml``) and
    ``metrics.json`` (missing while the run is still training: then ``metrics`` is empty)."""
    path = Path(path)
    resolved = _load_config(path)
    hydra_file = path / ".hydra" / "hydra.yaml"
    hydra_yaml = OmegaConf.load(hydra_file) if hydra_file.is_file() else None
    hydra_node = hydra_yaml.get("hydra") if isinstance(hydra_yaml, DictConfig) else None
    overrides_file = path / ".hydra" / "overrides.yaml"
    overrides = list(OmegaConf.load(overrides_file)) if overrides_file.is_file() else []
    name = str(resolved.get("name") or path.name)
    metrics = _read_json(path / "metrics.json")
    settings = _settings(hydra_node, overrides)
    return RunInfo(path, name, resolved, metrics, overrides, "hydra", settings)


def _settings(hydra_node: Any, overrides: Sequence[str]) -> dict[str, Any]:
    """Group choices (``hydra/*`` groups left out) updated with the overrides, parsed by Hydra's
    own override parser (so ``+key=v``, ``++key=v``, quoting and types read as Hydra read them)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    choices = OmegaConf.select(hydra_node, "runtime.choices") if hydra_node is not None else None
    settings: dict[str, Any] = {
        str(k): v for k, v in (choices or {}).items() if not str(k).startswith("hydra")
    }
    parsed = OverridesParser.create().parse_overrides([str(o) for o in overrides])
    for override in parsed:
        if override.is_delete() or override.is_sweep_override():
            continue
        value = override.value()
        settings[override.key_or_group] = list(value) if isinstance(value, list) else value
    return settings


def load_wandb_info(path: str | Path) -> RunInfo:
    """A W&B run folder alone: config from the run file, the ``val/*`` summary as the final
    result and ``test/*`` (the best checkpoint's test loop) as the best."""
    run = load_wandb_run(path)
    metrics: dict[str, Any] = {}
    for which, prefix in (("final", "val/"), ("best", "test/")):
        summary = {
            k.removeprefix(prefix): float(v)
            for k, v in run.summary.items()
            if k.startswith(prefix) and isinstance(v, (int, float))
        }
        if summary:
            metrics[which] = {"summary": summary}
    return RunInfo(run.path, run.name or run.path.name, run.config, metrics, [], "wandb")


def load_run(path: str | Path) -> RunInfo:
    """A Hydra run dir, or a W&B run folder / file."""
    path = Path(path)
    if (path / ".hydra" / "config.yaml").is_file():
        return load_hydra_run(path)
    if is_wandb_run(path):
        return load_wandb_info(path)
    raise FileNotFoundError(
        f"{path}: neither a run dir (.hydra/config.yaml) nor a W&B run folder (run-*.wandb)"
    )


def find_runs(paths: str | Path | Iterable[str | Path]) -> list[RunInfo]:
    """Every run under ``paths``: Hydra job dirs (a multirun folder's ``0/``, ``1/``, ...) and,
    where a folder holds no Hydra job, its W&B run folders. Sorted by path."""
    roots = [Path(paths)] if isinstance(paths, (str, Path)) else [Path(p) for p in paths]
    runs: list[RunInfo] = []
    for root in roots:
        if not root.exists():
            raise FileNotFoundError(f"{root}: no such folder")
        jobs = sorted({p.parent.parent for p in root.glob("**/.hydra/config.yaml")})
        if jobs:
            runs.extend(load_hydra_run(job) for job in jobs)
            continue
        folders = sorted({p.parent for p in root.glob("**/run-*.wandb")})
        runs.extend(load_wandb_info(folder) for folder in folders)
    if not runs:
        raise FileNotFoundError(
            "no runs found under " + ", ".join(map(str, roots)) + " (looked for .hydra/config.yaml "
            "and W&B run-*.wandb files)"
        )
    return sorted(runs, key=lambda r: str(r.path))


def latest_run(root: str | Path = "outputs", kind: str = "runs") -> Path:
    """The newest ``<root>/<task>/<kind>/<time>`` dir (``kind``: ``runs`` or ``multiruns``)
    that logged a training history (``task=eval`` / ``prepare`` dirs have none)."""
    root = Path(root)
    found = [p for p in root.glob(f"*/{kind}/*") if p.is_dir()]
    if kind == "runs":
        found = [p for p in found if (p / CSV_FILE).is_file() or wandb_dirs(p)]
    else:
        found = [p for p in found if any(p.glob(f"*/{CSV_FILE}")) or any(p.glob("*/wandb"))]
    if not found:
        raise FileNotFoundError(f"{root}: no {kind} under */{kind}/ (run training first)")
    newest = max(found, key=lambda p: (p.stat().st_mtime, p.name))
    evaluated = [p for p in found if kind != "runs" or _has_evaluation(p)]
    if not evaluated or newest in evaluated:
        return newest
    chosen = max(evaluated, key=lambda p: (p.stat().st_mtime, p.name))
    log.warning(
        "%s holds no evaluation yet (stopped before its first?); using the newest run that "
        "has one, %s (give --run <dir> to choose)",
        newest,
        chosen,
    )
    return chosen


def _has_evaluation(run_dir: Path) -> bool:
    """A run that evaluated at least once: ``metrics.json``, or ``val/*`` in its CSV curves
    (a W&B-only run counts as evaluated: its history is read by the notebook)."""
    if (run_dir / "metrics.json").is_file() or not (run_dir / CSV_FILE).is_file():
        return True
    with (run_dir / CSV_FILE).open() as fh:
        return "val/" in fh.readline()


def _is_bookkeeping(key: str) -> bool:
    return any(key == p or key.startswith(f"{p}.") or key.startswith(f"{p}/") for p in NOT_SETTINGS)


def varying_settings(runs: Sequence[RunInfo]) -> list[str]:
    """The settings whose values differ between ``runs`` (what was swept).

    Hydra runs are compared on what the user chose (group choices and overrides: ``model``,
    ``mask``, ``mask.ratio``); W&B-only runs on their flattened configs. Bookkeeping keys
    (``NOT_SETTINGS``) are left out, and so is a key whose values always equal an earlier key's
    (``model.mask.ratio`` follows ``mask.ratio`` through the interpolation).
    """
    chosen = sorted({k for r in runs for k in r.settings})
    keys = chosen or sorted({k for r in runs for k in r.flat_config})
    columns: dict[str, tuple[str, ...]] = {}
    for key in keys:
        if _is_bookkeeping(key):
            continue
        values = tuple(repr(r.setting(key)) for r in runs)
        if len(set(values)) > 1 and values not in columns.values():
            columns[key] = values
    return sorted(columns, key=lambda k: (k.count("."), k))


def runs_table(runs: Sequence[RunInfo], settings: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per run: the swept settings, then the final metrics in percent."""
    settings = list(settings) if settings is not None else varying_settings(runs)
    rows = []
    for run in runs:
        row: dict[str, Any] = {"run": run.name, "job": run.path.name, "path": str(run.path)}
        row.update({s: run.setting(s) for s in settings})
        row.update({m: 100.0 * v for m, v in run.summary().items()})
        rows.append(row)
    return pd.DataFrame(rows, columns=None if rows else ["run", "job", "path", *settings])


def run_labels(runs: Sequence[RunInfo], settings: Sequence[str] | None = None) -> list[str]:
    """A short label per run from its swept settings (``mask.strategy=part_v, mask.ratio=0.5``);
    the job / folder name where the runs do not differ in any setting."""
    settings = list(settings) if settings is not None else varying_settings(runs)
    if not settings:
        return [f"{r.name} ({r.path.name})" for r in runs]
    return [", ".join(f"{s}={r.setting(s)}" for s in settings) for r in runs]
