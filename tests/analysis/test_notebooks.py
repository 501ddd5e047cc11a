"""Each notebook of notebooks/ runs top to bottom against runs made here and saves its figures."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from analysis_helpers import AnalysisRuns, assert_png_not_blank
from helpers import assert_file_modes, umask

from gaitgl_lightning.analysis.history import wandb_dirs
from gaitgl_lightning.analysis.notebooks import (
    NOTEBOOKS,
    NotebookFailed,
    default_notebook_dir,
    default_parameters,
    execute_notebook,
    main,
)

NOTEBOOK_DIR = Path(__file__).resolve().parents[2] / "notebooks"
# Seconds per cell: a guard against a hung kernel, not a speed test (a whole notebook takes
# 5-10 s on a quiet 2-core CPU; a busy machine can be many times slower).
CELL_TIMEOUT = 300


def _run(name: str, parameters: dict, out: Path) -> nbformat.NotebookNode:
    path = execute_notebook(NOTEBOOK_DIR / f"{name}.ipynb", parameters, out, CELL_TIMEOUT)
    return nbformat.read(path, as_version=4)


def _text(nb: nbformat.NotebookNode) -> str:
    parts = []
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            parts.append(output.get("text", ""))
            parts.append(output.get("data", {}).get("text/plain", ""))
    return "\n".join(parts)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_committed_without_outputs_and_with_parameters(name: str) -> None:
    nb = nbformat.read(NOTEBOOK_DIR / f"{name}.ipynb", as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code)
    assert sum("parameters" in c.metadata.get("tags", []) for c in code) == 1
    assert default_notebook_dir() == NOTEBOOK_DIR


def test_inspect_run_from_csv(analysis_runs: AnalysisRuns, tmp_path: Path) -> None:
    figs = tmp_path / "figures"
    with umask(0o022):
        nb = _run(
            "inspect_run", {"RUN_DIR": str(analysis_runs.single), "FIG_DIR": str(figs)}, tmp_path
        )
    for name in ("training_curves", "eval_curves", "final_views"):
        assert_png_not_blank(figs / f"{name}.png")
    assert (figs / "final.json").is_file()
    assert "csv/metrics.csv" in _text(nb)
    # the notebook, its figures and numbers: group-readable (0644 under umask 022)
    assert assert_file_modes(tmp_path) >= 5


def test_inspect_run_from_a_wandb_folder_alone(analysis_runs: AnalysisRuns, tmp_path: Path) -> None:
    figs = tmp_path / "figures"
    run = wandb_dirs(analysis_runs.single)[0]
    nb = _run("inspect_run", {"RUN_DIR": str(run), "FIG_DIR": str(figs)}, tmp_path)
    assert_png_not_blank(figs / "training_curves.png")
    assert_png_not_blank(figs / "eval_curves.png")
    assert "no full evaluation result" in _text(nb)


def test_inspect_run_draws_the_rank_curve(analysis_runs: AnalysisRuns, tmp_path: Path) -> None:
    figs = tmp_path / "figures"
    _run("inspect_run", {"RUN_DIR": str(analysis_runs.retrieval), "FIG_DIR": str(figs)}, tmp_path)
    assert_png_not_blank(figs / "rank_curve.png")  # generic protocol: rank-k vs the GEI baseline


def test_compare_sweep(analysis_runs: AnalysisRuns, tmp_path: Path) -> None:
    figs = tmp_path / "figures"
    sweeps = [str(analysis_runs.ratio_sweep), str(analysis_runs.model_sweep)]
    nb = _run("compare_sweep", {"SWEEP_DIRS": sweeps, "FIG_DIR": str(figs)}, tmp_path)
    assert_png_not_blank(figs / "sweep_rank1.png")
    assert_png_not_blank(figs / "fig4_ratio_sweep.png")
    table5 = (figs / "table5.csv").read_text()
    assert "global only" in table5 and "local only, strip-level (V)" in table5
    assert "6 runs; swept settings: ['mask', 'model', 'mask.ratio']" in _text(nb)


def test_embeddings(analysis_runs: AnalysisRuns, tmp_path: Path) -> None:
    figs = tmp_path / "figures"
    dirs = [str(analysis_runs.ratio_sweep), str(analysis_runs.model_sweep)]
    nb = _run("embeddings", {"RUN_DIRS": dirs, "FIG_DIR": str(figs)}, tmp_path)
    assert_png_not_blank(figs / "embeddings_tsne.png")
    text = _text(nb)
    assert "global only" in text and "local only" in text and "GLCL" in text


@pytest.mark.slow  # a notebook kernel
def test_failing_cell_names_the_notebook(tmp_path: Path) -> None:
    with pytest.raises(
        NotebookFailed, match=r"inspect_run.ipynb: a cell failed.*FileNotFoundError"
    ):
        _run("inspect_run", {"RUN_DIR": str(tmp_path / "nowhere")}, tmp_path)
    assert (tmp_path / "inspect_run.ipynb").is_file()  # the executed part, for reading the error


@pytest.mark.extended  # 44 s in CI, where the other notebook tests execute both notebooks
def test_make_notebooks_finds_the_newest_runs(
    analysis_runs: AnalysisRuns, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["--outputs", str(analysis_runs.root / "outputs"), "--out", str(tmp_path)])
    assert code == 0, capsys.readouterr().err
    for name in NOTEBOOKS:
        assert (tmp_path / f"{name}.ipynb").is_file() == (name != "ablation")
    assert "skip ablation: nothing for it" in capsys.readouterr().out  # no outputs/ablation
    for name in ("training_curves", "eval_curves", "sweep_rank1", "embeddings_tsne"):
        assert_png_not_blank(tmp_path / "figures" / f"{name}.png")
    assert main(["--outputs", str(tmp_path / "none")]) == 2
    assert "no runs under" in capsys.readouterr().err


def test_only_multiruns_inspects_the_newest_sweeps_last_job(
    analysis_runs: AnalysisRuns, tmp_path: Path
) -> None:
    outputs = tmp_path / "outputs"
    (outputs / "train" / "multiruns").mkdir(parents=True)
    (outputs / "train" / "multiruns" / "m").symlink_to(analysis_runs.model_sweep)
    params = default_parameters(outputs, None, [], tmp_path / "out")
    assert params["inspect_run"]["RUN_DIR"].name == "1"
    assert params["compare_sweep"]["SWEEP_DIRS"] == [outputs / "train" / "multiruns" / "m"]
    with pytest.raises(FileNotFoundError, match="no runs"):
        default_parameters(tmp_path / "empty", None, [], tmp_path / "out")


@pytest.mark.slow  # a notebook kernel
def test_ablation_notebook_on_committed_csvs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    results = tmp_path / "results"
    results.mkdir()
    rows = ["table,arm,seed,steps,NM,BG,CL,mean,run,masks,setting"]
    for seed, (ref, arm) in enumerate(((80, 81), (82, 84), (84, 84.5))):
        rows += [
            f"table5,glcl_nomask,{seed},300,90,80,70,{ref},,,",
            f"table5,strip_v,{seed},300,90,80,70,{arm},,,",
        ]
    (results / "table5.csv").write_text("\n".join(rows) + "\n")
    fig4 = ["table,arm,seed,steps,NM,BG,CL,mean,run,masks,setting,strategy,ratio"]
    fig4 += [
        f"fig4,strip_v_d{d},{seed},300,90,80,70,{80 + seed - 10 * d},,,,strip_v,{d}"
        for seed in range(3)
        for d in (0.1, 0.3, 0.5)
    ]
    (results / "fig4.csv").write_text("\n".join(fig4) + "\n")
    out = tmp_path / "out"
    args = ["--outputs", str(tmp_path / "none"), "--ablation", str(results), "--out", str(out)]
    assert main([*args, "--only", "ablation"]) == 0, capsys.readouterr().err
    nb = nbformat.read(out / "ablation.ipynb", as_version=4)
    text = _text(nb)
    assert "2 table(s): fig4, table5" in text
    shown = "\n".join(
        "".join(o.get("data", {}).get("text/markdown", ""))
        for c in nb.cells
        for o in c.get("outputs", [])
    )
    assert "strip_v - glcl_nomask: +1.17 [-0.73, +3.06]" in shown
    assert "Against the control table5/glcl_nomask" in shown and "strip_v over d = 0.1" in shown
    images = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(images) == 3  # fig4, its curve against d, table5
    for name in ("table5.png", "fig4.png", "fig4-ratio.png"):
        assert_png_not_blank(out / "figures" / name)
