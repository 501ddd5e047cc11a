"""Weight averaging (``averaging=ema``): the rule it averages by, that it leaves training alone,
that evaluations and ``task=eval eval_weights=averaged`` score the average, and that a resume
continues it."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from helpers import TINY, compose_config
from hydra.errors import InstantiationException
from torch import nn

from gaitgl_lightning.errors import ConfigError, Stopped
from gaitgl_lightning.runtime.averaging import CHECKPOINT_KEY, AveragedWeights
from gaitgl_lightning.runtime.tasks import evaluate_checkpoint, train

QUIET = ["eval_best=false", "baseline_gei=false"]
COMMON = [*TINY, *QUIET, "trainer.max_steps=8", "eval_every=8", "checkpoint_every=100"]
EMA = ["averaging=ema", "callbacks.averaging.start_step=4"]


# ----------------------------------------------------------------------------- the rule
class _Holder(nn.Module):
    """Stands in for the LightningModule: the callback averages its ``net``."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))


def _walk(callback: AveragedWeights, steps: int, calls_per_step: int = 1) -> _Holder:
    """Set every weight and BN statistic to the step number after each step, as training
    would move them, and give the callback each step's end."""
    holder = _Holder()
    trainer: Any = SimpleNamespace(global_step=0)
    callback.setup(trainer, holder, "fit")  # type: ignore[arg-type]
    for step in range(1, steps + 1):
        with torch.no_grad():
            for tensor in [*holder.net.parameters(), holder.net[1].running_mean]:
                tensor.fill_(float(step))
        holder.net[1].num_batches_tracked.fill_(step)
        trainer.global_step = step
        for _ in range(calls_per_step):  # gradient accumulation: batches without a step
            callback.on_train_batch_end(trainer, holder)  # type: ignore[arg-type]
    return holder


@pytest.mark.parametrize(
    ("decay", "expected"),
    [
        (0.5, 5.125),  # steps 3..6: 3, then 3.5, 4.25, 5.125
        (None, 4.5),  # the equal average of 3, 4, 5, 6
    ],
)
def test_the_average_starts_after_start_step_and_follows_its_rule(
    decay: float | None, expected: float
) -> None:
    callback = AveragedWeights(decay=decay, start_step=2)
    _walk(callback, steps=6, calls_per_step=2)
    assert callback.average is not None
    averaged = callback.average.module
    assert int(callback.average.n_averaged) == 4 and callback.updated_at == 6
    for tensor in [*averaged.parameters(), averaged[1].running_mean]:
        assert torch.allclose(tensor, torch.full_like(tensor, expected))
    # a counter is not a weight: the batch count follows the network (never averaged)
    assert int(averaged[1].num_batches_tracked) == 6


def test_nothing_is_averaged_before_start_step() -> None:
    callback = AveragedWeights(decay=0.9, start_step=10)
    _walk(callback, steps=6)
    assert not callback.started and callback.updated_at == 0


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [({"decay": 1.5}, "decay"), ({"start_step": -1}, "start_step"), ({"evaluate": "best"}, "")],
)
def test_bad_settings_are_named(kwargs: dict[str, Any], named: str) -> None:
    with pytest.raises(ConfigError, match=f"callbacks.averaging.{named}"):
        AveragedWeights(**kwargs)


# ----------------------------------------------------------------------------- in a run
def _weights(path: Path, key: str = "state_dict") -> dict[str, torch.Tensor]:
    state = torch.load(path, weights_only=True)
    return state[key] if key == "state_dict" else state[key]["state_dict"]


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_averaging_leaves_training_alone_and_evaluations_score_the_average(
    tmp_path: Path,
) -> None:
    """What the averaging_long study pairs on: with the average on, the run trains the same
    weights as without it; its result is the average's, which task=eval scores again from
    last.ckpt, and eval_weights=trained scores the trained weights of the same checkpoint."""
    plain = train(compose_config(COMMON, tmp_path / "plain"))
    averaged = train(compose_config([*COMMON, *EMA], tmp_path / "ema"))
    last = {n: tmp_path / n / "run" / "checkpoints" / "last.ckpt" for n in ("plain", "ema")}
    assert _same(_weights(last["plain"]), _weights(last["ema"]))
    assert not _same(_weights(last["ema"]), _weights(last["ema"], CHECKPOINT_KEY))
    stored = torch.load(last["ema"], weights_only=True)[CHECKPOINT_KEY]
    assert (stored["n_averaged"], stored["updated_at"], stored["decay"]) == (4, 8, 0.99)
    assert CHECKPOINT_KEY not in torch.load(last["plain"], weights_only=True)
    assert plain["final"]["weights"] == "trained"
    assert averaged["final"]["weights"] == "averaged: EMA decay 0.99 of the weights after steps 5-8"

    def scored(weights: str, where: str) -> Any:
        overrides = [*TINY, "task=eval", f"ckpt_path={last['ema']}", f"eval_weights={weights}"]
        return evaluate_checkpoint(compose_config(overrides, tmp_path / where))["eval"]

    again, trained = scored("averaged", "eval-avg"), scored("trained", "eval-trained")
    assert again["summary"] == averaged["final"]["summary"]
    assert trained["summary"] == plain["final"]["summary"]
    assert (again["weights"], trained["weights"]) == ("averaged", "trained")


def test_a_checkpoint_without_an_average_names_the_setting(tmp_path: Path) -> None:
    train(compose_config(COMMON, tmp_path / "plain"))
    last = tmp_path / "plain" / "run" / "checkpoints" / "last.ckpt"
    overrides = [*TINY, "task=eval", f"ckpt_path={last}", "eval_weights=averaged"]
    with pytest.raises(ConfigError, match=r"holds no averaged weights.*eval_weights=trained"):
        evaluate_checkpoint(compose_config(overrides, tmp_path / "eval"))
    wrong = [*TINY, "task=eval", f"ckpt_path={last}", "eval_weights=best"]
    with pytest.raises(ConfigError, match="eval_weights='best'"):
        evaluate_checkpoint(compose_config(wrong, tmp_path / "eval2"))


def test_a_bad_decay_stops_the_run_with_its_name(tmp_path: Path) -> None:
    with pytest.raises(InstantiationException) as raised:
        train(compose_config([*COMMON, *EMA, "callbacks.averaging.decay=1.5"], tmp_path))
    assert isinstance(raised.value.__cause__, ConfigError)


def test_a_resumed_run_continues_the_same_average(tmp_path: Path) -> None:
    """Stopped at step 6 (two steps into the average) and resumed: the same trained and
    averaged weights as the run that was never stopped. The stop saves the step before this
    callback's end-of-step hook has run (callback order), so the save brings the average up to
    date first."""
    whole = [*COMMON, *EMA]
    train(compose_config(whole, tmp_path / "whole"))
    stop = "+callbacks.signal_at={_target_: test_resume.SignalAt, step: 5}"
    with pytest.raises(Stopped):
        train(compose_config([*whole, stop], tmp_path / "cut"))
    run = tmp_path / "cut" / "run"
    saved = torch.load(run / "checkpoints" / "interrupted-step000006.ckpt", weights_only=True)
    assert (saved[CHECKPOINT_KEY]["updated_at"], saved[CHECKPOINT_KEY]["n_averaged"]) == (6, 2)
    train(compose_config([*whole, "ckpt_path=last", f"resume={run}"], tmp_path / "cut"))
    ends = [tmp_path / n / "run" / "checkpoints" / "last.ckpt" for n in ("whole", "cut")]
    assert _same(*(_weights(p) for p in ends))
    assert _same(*(_weights(p, CHECKPOINT_KEY) for p in ends))


def test_an_average_that_does_not_fit_names_the_checkpoint(tmp_path: Path) -> None:
    """A resume whose checkpoint's average does not fit the network stops with one line
    naming the file (before a step is trained)."""
    from gaitgl_lightning.errors import CheckpointError

    train(compose_config([*COMMON, *EMA], tmp_path / "ema"))
    last = tmp_path / "ema" / "run" / "checkpoints" / "last.ckpt"
    state = torch.load(last, weights_only=True)
    state[CHECKPOINT_KEY]["state_dict"].popitem()
    broken = tmp_path / "broken.ckpt"
    torch.save(state, broken)
    longer = [*TINY, *QUIET, "trainer.max_steps=10", *EMA, f"ckpt_path={broken}"]
    with pytest.raises(CheckpointError, match=f"{broken}: its averaged weights do not fit"):
        train(compose_config(longer, tmp_path / "resumed"))
