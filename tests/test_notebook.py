"""docs/notebook.ipynb runs top to bottom (nbclient, a real kernel): the notebook API as a user meets it."""

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
