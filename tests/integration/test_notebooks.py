"""Every notebook in notebooks/ runs top to bottom with papermill, as `make test` runs it.

The kernel is the stack's venv (the `python3` kernel resolves to this interpreter); the notebooks use the
`test` profile's services (Spark local, Kafka, Elasticsearch, MLflow) on their own scratch lake, topic and
index prefix, with the small sizes of their parameters cell. A failing cell fails the test (papermill
raises PapermillExecutionError naming the cell). New notebooks are picked up by the glob.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration]

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def _cells(path: Path) -> list[dict]:
    return json.loads(path.read_text())["cells"]


def _execute(src: Path, out: Path, parameters: dict) -> dict:
    import papermill as pm

    # the kernel must be this interpreter: jupyter_client swaps a kernelspec's bare "python" for sys.executable
    from jupyter_client.kernelspec import get_kernel_spec

    argv0 = get_kernel_spec("python3").argv[0]
    assert argv0 in ("python", "python3", sys.executable) or Path(argv0).resolve() == Path(sys.executable).resolve()
    pm.execute_notebook(str(src), str(out), parameters=parameters, kernel_name="python3", cwd=str(src.parent),
                        execution_timeout=1200, progress_bar=False, log_output=False)
    return json.loads(out.read_text())


def test_notebooks_are_stored_stripped_with_one_parameters_cell():
    assert NOTEBOOKS, "notebooks/ holds no notebook"
    for path in NOTEBOOKS:
        cells = _cells(path)
        code = [c for c in cells if c["cell_type"] == "code"]
        assert all(c["outputs"] == [] and c["execution_count"] is None for c in code), f"{path.name}: not stripped"
        params = [c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])]
        assert len(params) == 1, f"{path.name}: {len(params)} cells tagged 'parameters'"
        assert "profile = " in "".join(params[0]["source"]), f"{path.name}: the parameters cell picks no profile"


@pytest.mark.slow
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_top_to_bottom(notebook, kafka, elasticsearch, mlflow_server, tmp_path):
    done = _execute(notebook, tmp_path / notebook.name, {"profile": "test"})
    code = [c for c in done["cells"] if c["cell_type"] == "code"]
    assert all(c["execution_count"] is not None for c in code)         # every cell ran
    errors = [o for c in code for o in c["outputs"] if o.get("output_type") == "error"]
    assert errors == []
    injected = [c for c in done["cells"] if "injected-parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(injected) == 1 and 'profile = "test"' in "".join(injected[0]["source"])
    # matplotlib's inline backend embeds the figures (with Agg there would be none)
    if any("plt." in "".join(c["source"]) for c in code):
        assert any("image/png" in o.get("data", {}) for c in code for o in c["outputs"]), "no figure embedded"


def test_a_failing_cell_fails_the_run(tmp_path):
    """The harness itself: papermill stops at the failing cell and raises."""
    import nbformat
    from papermill.exceptions import PapermillExecutionError

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("x = 1"), nbformat.v4.new_code_cell("assert x == 2, 'shown wrong'"),
                nbformat.v4.new_code_cell("reached = True")]
    nb.cells[0].metadata["tags"] = ["parameters"]
    nb.metadata["kernelspec"] = {"name": "python3", "language": "python", "display_name": "Python 3"}
    src = tmp_path / "failing.ipynb"
    src.write_text(nbformat.writes(nb))
    with pytest.raises(PapermillExecutionError, match="shown wrong"):
        _execute(src, tmp_path / "out.ipynb", {"x": 1})
    ran = json.loads((tmp_path / "out.ipynb").read_text())["cells"]
    assert ran[-1]["execution_count"] is None                          # nothing after the failing cell ran
