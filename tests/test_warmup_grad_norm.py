"""The optional linear warm-up of the SGD recipes and the train/grad_norm log."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import torch
from helpers import TINY, compose_config
from hydra.utils import instantiate

from gaitgl_lightning.module import GaitGLModule
from gaitgl_lightning.runtime.tasks import train
from gaitgl_lightning.schedules import warmup_multistep


def _lrs(scheduler_factory, steps: int, lr: float = 0.1) -> list[float]:  # type: ignore[no-untyped-def]
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=lr)
    sched = scheduler_factory(opt)
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def _expected(step: int, lr: float, warmup: int, start: float, milestones: list[int]) -> float:
    ramp = min(1.0, start + (1.0 - start) * step / warmup) if warmup else 1.0
    return lr * ramp * 0.1 ** sum(step >= m for m in milestones)


def test_warmup_is_linear_then_milestones_are_absolute_steps() -> None:
    got = _lrs(lambda o: warmup_multistep(o, [6, 8], 0.1, warmup_steps=4, start_factor=0.1), 10)
    want = [_expected(k, 0.1, 4, 0.1, [6, 8]) for k in range(10)]
    assert got == pytest.approx(want, rel=1e-6)
    # No warm-up is plain multistep, milestone steps unchanged.
    plain = _lrs(lambda o: torch.optim.lr_scheduler.MultiStepLR(o, [6, 8], 0.1), 10)
    assert _lrs(lambda o: warmup_multistep(o, [6, 8], 0.1, warmup_steps=0), 10) == plain


def test_warmup_resumes_from_its_state_dict() -> None:
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.1)
    sched = warmup_multistep(opt, [5], 0.1, warmup_steps=4, start_factor=0.1)
    for _ in range(2):
        opt.step()
        sched.step()
    state_opt, state_sched = opt.state_dict(), sched.state_dict()
    q = torch.nn.Parameter(torch.zeros(1))
    opt2 = torch.optim.SGD([q], lr=0.1)
    sched2 = warmup_multistep(opt2, [5], 0.1, warmup_steps=4, start_factor=0.1)
    opt2.load_state_dict(state_opt)
    sched2.load_state_dict(state_sched)
    got = []
    for _ in range(5):
        got.append(opt2.param_groups[0]["lr"])
        opt2.step()
        sched2.step()
    assert got == pytest.approx([_expected(k, 0.1, 4, 0.1, [5]) for k in range(2, 7)], rel=1e-6)


@pytest.mark.parametrize(("warmup", "start"), [(-1, 0.1), (4, 0.0), (4, 1.5)])
def test_bad_warmup_settings_name_the_setting(warmup: int, start: float) -> None:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.raises(ValueError, match=r"scheduler\.(warmup_steps|start_factor)"):
        warmup_multistep(opt, [5], warmup_steps=warmup, start_factor=start)


def test_grew_preset_composes_with_the_warmup_config(tmp_path: Path) -> None:
    cfg = compose_config(["+experiment=grew_sgd", "scheduler=warmup_multistep"], tmp_path)
    assert list(cfg.scheduler.milestones) == [150000, 180000]  # the preset's, kept
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    sched = instantiate(cfg.scheduler)(opt)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1 * cfg.scheduler.start_factor)
    for _ in range(int(cfg.scheduler.warmup_steps)):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1)


def test_grad_norm_is_the_global_two_norm(monkeypatch: pytest.MonkeyPatch) -> None:
    net = torch.nn.Linear(3, 2)
    module = GaitGLModule(net, torch.nn.Identity(), lambda ps: torch.optim.SGD(ps, lr=0.1))
    net.weight.grad = torch.full_like(net.weight, 2.0)  # 6 entries of 2
    net.bias.grad = torch.tensor([3.0, 0.0])
    logged: dict[str, float] = {}
    monkeypatch.setattr(module, "log", lambda name, value, **kw: logged.__setitem__(name, value))
    module.on_before_optimizer_step(torch.optim.SGD(net.parameters(), lr=0.1))
    assert float(logged["train/grad_norm"]) == pytest.approx(math.sqrt(6 * 4 + 9))


def test_tiny_sgd_run_logs_warmup_lr_and_grad_norm(tmp_path: Path) -> None:
    overrides = [
        *TINY,
        "trainer.max_steps=6",
        "eval_every=6",
        "baseline_gei=false",
        "eval_best=false",
        "optimizer=sgd",
        "optimizer.lr=0.01",
        "scheduler=warmup_multistep",
        "scheduler.warmup_steps=4",
        "scheduler.start_factor=0.25",
        "scheduler.milestones=[5]",
    ]
    train(compose_config(overrides, tmp_path))
    (path,) = (tmp_path / "run").glob("csv/**/metrics.csv")
    rows = [r for r in csv.DictReader(path.open()) if r.get("train/lr")]
    lrs = [float(r["train/lr"]) for r in rows]
    assert lrs == pytest.approx([_expected(k, 0.01, 4, 0.25, [5]) for k in range(6)], rel=1e-6)
    norms = [float(r["train/grad_norm"]) for r in rows]
    assert len(norms) == 6 and all(math.isfinite(n) and n > 0 for n in norms)
