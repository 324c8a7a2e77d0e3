"""docs/notebook.ipynb runs top to bottom (nbclient, a real kernel): the notebook API as a user meets it;
it is committed with its outputs, and what its text says about its figure holds for the runs it made."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).parent.parent / "docs" / "notebook.ipynb"


@pytest.mark.slow
def test_the_example_notebook_runs(tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    nb = nbformat.read(shutil.copy(NOTEBOOK, tmp_path), as_version=4)
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 2  # the batch-size figure and a curve
    text = "".join(o.get("text", "") for o in outputs)
    assert "mlflow ui --host 127.0.0.1 --port 5000 --backend-store-uri" in text and "viewStateShareKey=" in text
    assert (tmp_path / "mlflow.db").exists()

    # the text's claims about the momentum figure, checked on the runs the figure shows
    prose = " ".join(cell.source for cell in nb.cells if cell.cell_type == "markdown")
    assert "momentum is **worse at every batch size**, and by less as the batch\ngrows" in prose
    import suite

    runs = suite.results("nqm", tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    means = runs.groupby(["batch_size", "optimizer.momentum"])["val_loss"].mean().unstack()
    assert list(means.index) == [4, 32, 256] and list(means.columns) == [0.0, 0.9]
    ratio = means[0.9] / means[0.0]
    assert (ratio > 1).all(), ratio  # worse at every batch size
    assert ratio.is_monotonic_decreasing, ratio  # by less as the batch grows


def test_the_notebook_is_committed_with_its_outputs():
    nbformat = pytest.importorskip("nbformat")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert all(cell.execution_count for cell in code)  # executed, top to bottom
    assert [cell.execution_count for cell in code] == list(range(1, len(code) + 1))
    outputs = [o for cell in code for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 2  # a reader on a code host sees the figures
