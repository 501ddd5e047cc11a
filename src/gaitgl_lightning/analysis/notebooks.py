"""Execute the notebooks of ``notebooks/`` against a user's runs (``make notebooks``; the tests).

The notebooks are committed without outputs. Each has one cell tagged ``parameters`` with
defaults; this module adds a cell after it that sets the values given here (the papermill
convention, without papermill), runs every cell with nbclient, and writes the executed notebook
next to the figures. A failing cell stops the run with the notebook and cell named; the executed
part is still written, so that the error can be read in context.

    python -m gaitgl_lightning.analysis.notebooks --outputs outputs
    python -m gaitgl_lightning.analysis.notebooks --run outputs/train/runs/<time> \\
        --sweep outputs/train/multiruns/<time> --out reports/
    python -m gaitgl_lightning.analysis.notebooks --only ablation --ablation docs/results
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from gaitgl_lightning.fileio import atomic_write_text

NOTEBOOKS = ("inspect_run", "compare_sweep", "embeddings", "ablation")


class NotebookFailed(RuntimeError):
    """A cell of a notebook raised; the message names the notebook, the cell and the error."""


def default_notebook_dir() -> Path:
    """``notebooks/`` of the checkout (next to ``src/``), else of the working directory."""
    here = Path(__file__).resolve().parents[3] / "notebooks"
    return here if here.is_dir() else Path.cwd() / "notebooks"


def parameters_cell(parameters: Mapping[str, Any]) -> Any:
    """A code cell assigning ``parameters`` (as Python literals), tagged ``injected-parameters``."""
    import nbformat

    lines = ["# Parameters injected by gaitgl_lightning.analysis.notebooks"]
    lines += [f"{name} = {value!r}" for name, value in parameters.items()]
    cell = nbformat.v4.new_code_cell("\n".join(lines))
    cell.metadata["tags"] = ["injected-parameters"]
    return cell


def inject_parameters(nb: Any, parameters: Mapping[str, Any], where: str) -> None:
    """Insert the parameter cell after the cell tagged ``parameters``."""
    for i, cell in enumerate(nb.cells):
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            nb.cells.insert(i + 1, parameters_cell(parameters))
            return
    raise ValueError(f"{where}: no cell tagged 'parameters' to put the parameters after")


def execute_notebook(
    notebook: str | Path,
    parameters: Mapping[str, Any],
    out_dir: str | Path,
    timeout: int = 600,
) -> Path:
    """Run ``notebook`` top to bottom with ``parameters``; write it executed into ``out_dir``.

    The kernel starts in ``out_dir``, so relative figure paths land there.
    """
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    notebook, out_dir = Path(notebook), Path(out_dir)
    nb = nbformat.read(notebook, as_version=4)
    inject_parameters(nb, {k: _plain(v) for k, v in parameters.items()}, str(notebook))
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / notebook.name
    client = NotebookClient(
        nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(out_dir)}}
    )
    try:
        client.execute()
    except CellExecutionError as err:
        atomic_write_text(target, nbformat.writes(nb))
        raise NotebookFailed(
            f"{notebook}: a cell failed ({err.ename}: {err.evalue}); the executed part is in "
            f"{target}"
        ) from err
    atomic_write_text(target, nbformat.writes(nb))
    return target


def _plain(value: Any) -> Any:
    """Paths become absolute strings (the kernel runs in the output dir), so that the injected
    cell holds plain literals."""
    if isinstance(value, Path):
        return str(value.resolve())
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def default_parameters(
    outputs: Path,
    run: Path | None,
    sweeps: Sequence[Path],
    out_dir: Path,
    ablation: Path | None = None,
) -> dict[str, dict[str, Any]]:
    """The parameters of each notebook: the given run, sweeps and ablation dir, else the newest
    under ``outputs`` (with only multiruns there, the run is the newest sweep's last job; the
    ablations are ``outputs/ablation``). A notebook with nothing to show is left out."""
    from gaitgl_lightning.analysis.runs import find_runs, latest_run

    params: dict[str, dict[str, Any]] = {}
    fig_dir = out_dir / "figures"
    ablation = ablation or (outputs / "ablation" if (outputs / "ablation").is_dir() else None)
    if ablation is not None:
        params["ablation"] = {"SWEEP_DIR": ablation, "FIG_DIR": fig_dir}
    if not sweeps:
        try:
            sweeps = [latest_run(outputs, "multiruns")]
        except FileNotFoundError:
            sweeps = []
    if run is None:
        try:
            run = latest_run(outputs, "runs")
        except FileNotFoundError:
            if not sweeps:
                if params:
                    return params  # only ablations to look at
                raise
            run = find_runs(sweeps[-1])[-1].path
    params["inspect_run"] = {"RUN_DIR": run, "FIG_DIR": fig_dir}
    if sweeps:
        params["compare_sweep"] = {"SWEEP_DIRS": list(sweeps), "FIG_DIR": fig_dir}
    params["embeddings"] = {"RUN_DIRS": [*sweeps, run], "FIG_DIR": fig_dir}
    return params


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m gaitgl_lightning.analysis.notebooks",
        description="Execute the analysis notebooks against your runs; write them with figures.",
    )
    parser.add_argument("--outputs", type=Path, default=Path("outputs"), help="runs root")
    parser.add_argument("--run", type=Path, help="one run dir (default: the newest)")
    parser.add_argument("--sweep", type=Path, action="append", default=[], help="multirun dir")
    parser.add_argument("--ablation", type=Path, help="an ablation sweep dir or CSV folder")
    parser.add_argument("--out", type=Path, help="where to write (default: <outputs>/notebooks)")
    parser.add_argument("--notebooks", type=Path, default=None, help="the notebooks' folder")
    parser.add_argument("--only", nargs="*", choices=NOTEBOOKS, help="run only these")
    args = parser.parse_args(argv)
    out_dir = args.out or args.outputs / "notebooks"
    try:
        params = default_parameters(args.outputs, args.run, args.sweep, out_dir, args.ablation)
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    source = args.notebooks or default_notebook_dir()
    for name in args.only or NOTEBOOKS:
        if name not in params:
            what = "--ablation" if name == "ablation" else "--sweep"
            print(f"skip {name}: nothing for it under {args.outputs} (give {what})")
            continue
        start = time.perf_counter()
        try:
            path = execute_notebook(source / f"{name}.ipynb", params[name], out_dir)
        except NotebookFailed as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
        print(f"{name}: {path} ({time.perf_counter() - start:.1f} s)")
    print(f"figures: {out_dir / 'figures'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
