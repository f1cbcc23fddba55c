"""Drawing compiled graphs."""

from __future__ import annotations

import importlib
import re
import xml.etree.ElementTree as ET

import pyro
import pyro.distributions as dist
import pytest
import torch

import pgmdl
from tests.conftest import load_zoo, needs_dot

# the module, not the function pgmdl.render that shares its name
render_module = importlib.import_module("pgmdl.render")


def model_with_everything(x, c):
    z = pyro.sample("z", dist.Normal(c.sum(), 1.0))
    h = pyro.deterministic("h", z * 2)
    branch = 1.0 if z > -100 else 0.0
    with pyro.plate("data", len(x), subsample_size=2) as idx:
        w = pyro.sample("w", dist.Normal(h, 1.0))
        with pyro.plate("inner", 3, dim=-2):
            pyro.sample("u", dist.Normal(w, branch))
        pyro.sample("x", dist.Normal(w, 1.0), obs=x[idx])


@pytest.fixture
def graph():
    with pytest.warns(pgmdl.StructureWarning):
        return pgmdl.compile(model_with_everything, torch.zeros(5), torch.ones(2))


def test_source_shows_kinds_plates_and_edge_styles(graph):
    source = pgmdl.render(graph, show_distributions=True, show_shapes=True).source
    assert 'label="data (2 of N=5)"' in source and 'label="inner (N=3)"' in source
    assert 'x [label="x\nNormal\n(2)|()" fillcolor=gray80' in source
    assert 'h [label="h\nDelta\n()|()" shape=ellipse style=dashed]' in source
    assert 'z [label="z\nNormal\n()|()" shape=ellipse style=solid]' in source
    assert "z -> u [color=gray40 style=dotted]" in source  # control edge
    assert "z -> h\n" in source  # data edge, default style
    assert "input_20_c [label=c fontcolor=gray30 shape=box style=dashed]" in source
    assert "input_20_c -> z [color=gray40 style=dashed]" in source


def test_plates_are_nested_clusters(graph):
    source = pgmdl.render(graph).source
    outer = source.index("subgraph cluster__data {")
    inner = source.index("subgraph cluster__data__inner {")
    end_outer = source.index("}", source.index("x [label"))
    assert outer < inner < end_outer
    # u lives in the inner cluster only
    assert source.index("u [label", inner) < source.index("}", inner)


def test_site_names_that_graphviz_would_misread_are_escaped():
    def model():
        a = pyro.sample("a:b", dist.Normal(0.0, 1.0))
        pyro.sample("c d", dist.Normal(a, 1.0))

    source = pgmdl.render(model).source
    assert "a_3a_b -> c_20_d" in source and 'label="a:b"' in source


def test_render_a_model_with_its_arguments():
    zoo = load_zoo("cvae")
    dot = pgmdl.render(zoo.model, *zoo.args, model_kwargs=zoo.kwargs)
    assert "z -> x" in dot.source


def test_graph_plus_model_arguments_is_an_error(graph):
    with pytest.raises(pgmdl.ModelError, match="only used to compile"):
        pgmdl.render(graph, torch.zeros(3))


def test_panels_can_sit_side_by_side(graph):
    import graphviz

    dot = graphviz.Digraph()
    render_module.add_panel(dot, graph, panel="model")
    render_module.add_panel(
        dot, graph, panel="guide", edges=[("x", "w", "data"), ("w", "z", "data")]
    )
    source = dot.source
    assert "subgraph cluster_panel_model" in source and "subgraph cluster_panel_guide" in source
    assert "model_2f_z -> model_2f_h" in source and "guide_2f_x -> guide_2f_w" in source


@needs_dot
@pytest.mark.parametrize("suffix", ["svg", "png", "pdf"])
def test_writes_images_when_dot_exists(graph, tmp_path, suffix):
    path = tmp_path / f"graph.{suffix}"
    pgmdl.render(graph, filename=path)
    assert path.stat().st_size > 0
    if suffix == "svg":
        root = ET.parse(path).getroot()
        assert root.tag.endswith("svg")
        texts = {t.text for t in root.iter() if t.tag.endswith("text")}
        assert {"z", "h", "w", "u", "x", "c", "data (2 of N=5)"} <= texts
    assert not list(tmp_path.glob("*.gv"))  # no stray source file


def test_without_dot_the_source_is_written_with_instructions(graph, tmp_path, monkeypatch):
    monkeypatch.setattr(render_module.shutil, "which", lambda name: None)
    with pytest.warns(pgmdl.RenderWarning, match="apt-get install graphviz") as caught:
        pgmdl.render(graph, filename=tmp_path / "graph.svg")
    assert "dot -Tsvg" in str(caught[0].message)
    source = (tmp_path / "graph.gv").read_text()
    assert source.startswith("digraph") and "z -> h" in source
    assert not (tmp_path / "graph.svg").exists()


def test_source_formats_and_bad_formats(graph, tmp_path):
    pgmdl.render(graph, filename=tmp_path / "g.gv")
    assert (tmp_path / "g.gv").read_text().startswith("digraph")
    with pytest.raises(ValueError, match="cannot write format 'bmpx'"):
        pgmdl.render(graph, filename=tmp_path / "g.bmpx")


def test_guide_panel_styles_fill_in_pooled_and_joint():
    loaded = load_zoo("gmm")
    dot = pgmdl.render(
        loaded.model, *loaded.args, model_kwargs=loaded.kwargs, guide="nami", order="reverse"
    )
    source = dot.source
    # weights gets x by fill-in (dashed red), pooled over data (thick, double arrowhead).
    assert re.search(r"guide_2f_x -> guide_2f_weights \[[^\]]*color=firebrick", source)
    assert re.search(r"guide_2f_x -> guide_2f_weights \[[^\]]*arrowhead=veevee", source)
    # locs needs a joint conditional over its plate: double border and a note.
    assert re.search(r'guide_2f_locs \[label="locs\n\(joint over components\)"', source)
    assert "peripheries=2" in source
    # Observed sites are roots of the guide.
    assert not re.search(r"-> guide_2f_x\b", source)


def test_guide_argument_is_checked(graph):
    with pytest.raises(pgmdl.ModelError, match="guide='nami'"):
        pgmdl.render(graph, guide="amortized")
    inverse = pgmdl.invert(graph)
    assert "cluster_panel_guide" in pgmdl.render(graph, guide=inverse).source
