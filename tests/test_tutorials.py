"""Every tutorial notebook executes, in fast mode (``PGMDL_FAST=1``)."""

from __future__ import annotations

import os

import nbformat
import pytest
from nbclient import NotebookClient

from tests.conftest import ROOT

NOTEBOOKS = sorted((ROOT / "tutorials").glob("*.ipynb"))


def test_there_are_tutorials():
    assert NOTEBOOKS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_tutorial_executes(path, monkeypatch):
    monkeypatch.setenv("PGMDL_FAST", "1")
    monkeypatch.setenv("PYTHONWARNINGS", "ignore::UserWarning:tqdm")
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(
        notebook,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
    )
    client.execute()  # raises CellExecutionError with the failing cell's traceback
    assert os.environ["PGMDL_FAST"] == "1"
