"""Drawing compiled graphs."""

from __future__ import annotations

import importlib
import re
import xml.etree.ElementTree as ET

import graphviz
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
    dot = pgmdl.render(zoo.model, model_args=zoo.args, model_kwargs=zoo.kwargs)
    assert "z -> x" in dot.source


def test_graph_plus_model_arguments_is_an_error(graph):
    with pytest.raises(pgmdl.ModelError, match="only used to compile"):
        pgmdl.render(graph, model_args=(torch.zeros(3),))


def test_positional_model_arguments_still_work_with_a_future_warning():
    zoo = load_zoo("cvae")
    expected = pgmdl.render(zoo.model, model_args=zoo.args, model_kwargs=zoo.kwargs).source
    with pytest.warns(FutureWarning, match=r"render\(model, model_args=args, \.\.\.\)") as caught:
        old = pgmdl.render(zoo.model, *zoo.args, model_kwargs=zoo.kwargs)
    assert old.source == expected
    assert caught[0].filename == __file__  # points at the caller's line


def test_model_arguments_given_twice_or_not_as_a_tuple_are_errors():
    x = torch.zeros(3)
    with pytest.raises(pgmdl.errors.ArgumentError, match="given twice"):
        pgmdl.render(_plain_model, x, model_args=(x,))
    with pytest.raises(pgmdl.errors.ArgumentTypeError, match=r"model_args=\(x,\)"):
        pgmdl.render(_plain_model, model_args=x)


def _plain_model(x):
    z = pyro.sample("z", dist.Normal(0.0, 1.0))
    with pyro.plate("data", len(x)):
        pyro.sample("x", dist.Normal(z, 1.0), obs=x)


def test_panels_can_sit_side_by_side(graph):
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
        written = pgmdl.render(graph, filename=tmp_path / "graph.svg")
    assert "dot -Tsvg" in str(caught[0].message)
    source = (tmp_path / "graph.gv").read_text()
    assert source.startswith("// pgmdl.render") and "\ndigraph" in source and "z -> h" in source
    assert not (tmp_path / "graph.svg").exists()
    # Rendering again replaces the fallback source pgmdl wrote, and nothing else.
    with pytest.warns(pgmdl.RenderWarning):
        render_module.write(written, tmp_path / "graph.svg")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["graph.gv"]


def _snapshot(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir()}


USER_SOURCE = "digraph mine { a -> b }  // the user's own file\n"


@needs_dot
@pytest.mark.parametrize("suffix", ["svg", "png"])
def test_drawing_an_image_keeps_every_other_file(graph, tmp_path, suffix):
    # The regression: graphviz's render() writes X.gv, then deletes it,
    # taking the user's own X.gv with it.
    (tmp_path / "graph.gv").write_text(USER_SOURCE)
    (tmp_path / "graph").write_text("an extensionless sibling")
    (tmp_path / "notes.txt").write_text("unrelated")
    before = _snapshot(tmp_path)
    pgmdl.render(graph, filename=tmp_path / f"graph.{suffix}")
    after = _snapshot(tmp_path)
    assert set(after) == set(before) | {f"graph.{suffix}"}
    assert {k: v for k, v in after.items() if k in before} == before
    assert after[f"graph.{suffix}"]


@needs_dot
def test_a_failing_dot_leaves_the_existing_image_alone(graph, tmp_path, monkeypatch):
    target = tmp_path / "graph.svg"
    target.write_text("<svg>old</svg>")

    def fail(*args, **kwargs):
        raise graphviz.CalledProcessError(1, ["dot"])

    monkeypatch.setattr(graphviz.Digraph, "pipe", fail)
    with pytest.raises(RuntimeError, match="dot failed to draw"):
        pgmdl.render(graph, filename=target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["graph.svg"]
    assert target.read_text() == "<svg>old</svg>"


def test_without_dot_the_fallback_never_overwrites_a_users_source(graph, tmp_path, monkeypatch):
    monkeypatch.setattr(render_module.shutil, "which", lambda name: None)
    (tmp_path / "graph.gv").write_text(USER_SOURCE)
    (tmp_path / "other.svg").write_text("<svg/>")
    with pytest.warns(pgmdl.RenderWarning, match=r"graph\.svg\.gv"):
        written = pgmdl.render(graph, filename=tmp_path / "graph.svg")
    assert (tmp_path / "graph.gv").read_text() == USER_SOURCE
    assert (tmp_path / "other.svg").read_text() == "<svg/>"
    assert "z -> h" in (tmp_path / "graph.svg.gv").read_text()
    # A second user file in the way: the next free name, still nothing overwritten.
    (tmp_path / "graph.svg.gv").write_text(USER_SOURCE)
    with pytest.warns(pgmdl.RenderWarning, match=r"graph\.svg\.1\.gv"):
        assert render_module.write(written, tmp_path / "graph.svg").name == "graph.svg.1.gv"
    assert (tmp_path / "graph.svg.gv").read_text() == USER_SOURCE
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "graph.gv",
        "graph.svg.1.gv",
        "graph.svg.gv",
        "other.svg",
    ]


def test_without_the_dot_binary_graphviz_falls_back_too(graph, tmp_path, monkeypatch):
    # `which` finds a dot that graphviz then cannot run: same fallback.
    def missing(*args, **kwargs):
        raise graphviz.ExecutableNotFound(["dot"])

    monkeypatch.setattr(render_module.shutil, "which", lambda name: "/nonexistent/dot")
    monkeypatch.setattr(graphviz.Digraph, "pipe", missing)
    with pytest.warns(pgmdl.RenderWarning):
        pgmdl.render(graph, filename=tmp_path / "graph.pdf")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["graph.gv"]


def test_source_formats_and_bad_formats(graph, tmp_path):
    pgmdl.render(graph, filename=tmp_path / "g.gv")
    assert (tmp_path / "g.gv").read_text().startswith("digraph")
    with pytest.raises(ValueError, match="cannot write format 'bmpx'"):
        pgmdl.render(graph, filename=tmp_path / "g.bmpx")


def gmm_drawing(**options):
    loaded = load_zoo("gmm")
    return pgmdl.render(
        loaded.model,
        model_args=loaded.args,
        model_kwargs=loaded.kwargs,
        guide="nami",
        order="reverse",
        **options,
    )


def test_guide_panel_styles_fill_in_pooled_and_joint():
    dot = gmm_drawing(legend=False)
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


def legend_of(source: str) -> str:
    """The body of the drawing's legend box ("" when it has none)."""
    start = source.find("subgraph cluster_legend {")
    if start < 0:
        return ""
    depth = 0
    for end in range(start, len(source)):
        depth += {"{": 1, "}": -1}.get(source[end], 0)
        if source[end] == "}" and depth == 0:
            return source[start:end]
    raise AssertionError("unbalanced legend box")


def legend_keys(source: str) -> set[str]:
    body = legend_of(source)
    return {key for key, text in render_module.LEGEND.items() if text in body}


def test_a_guide_drawing_has_a_legend_of_the_styles_it_uses():
    source = gmm_drawing().source
    assert "label=legend" in legend_of(source)
    # gmm in reverse order: fill-in, a pooled edge, a joint site, plates; no deterministic
    # site, no input, no augmented edge, no multiset plate
    assert legend_keys(source) == {
        "node:latent",
        "node:observed",
        "joint",
        "plate",
        "edge:data",
        "edge:inverse",
        "edge:moral",
        "edge:fill-in",
        "pooled",
    }
    # each edge entry is an arrow in the edge's own style
    assert re.search(
        r"legend_2f_edge_3a_fill-in_20_from -> legend_2f_edge_3a_fill-in [^\]]*"
        r"color=firebrick",
        source.replace("_2d_", "-"),
    )
    assert re.search(r"-> legend_2f_pooled \[[^\]]*arrowhead=veevee", source)


def test_the_legend_follows_the_drawing(graph):
    assert legend_of(pgmdl.render(graph).source) == ""  # a model alone: off by default
    assert legend_of(gmm_drawing(legend=False).source) == ""
    keys = legend_keys(pgmdl.render(graph, legend=True).source)
    assert keys == {
        "node:latent",
        "node:observed",
        "node:deterministic",
        "node:input",
        "plate",
        "edge:data",
        "edge:control",
        "edge:input",
    }
    hidden = legend_keys(pgmdl.render(graph, legend=True, show_inputs=False).source)
    assert hidden == keys - {"node:input", "edge:input"}
    augmented = legend_keys(pgmdl.render(graph, guide="nami", augment=True).source)
    assert "edge:augment" in augmented and "node:deterministic" in augmented


def part_model(labels, mask, x=None):
    with pyro.plate("data", labels.shape[0], dim=-1):
        with pgmdl.multiset_plate("parts", mask, dim=-2) as parts:
            w = pyro.sample("w", dist.Normal(parts.align(labels), 1.0))
        return pyro.sample("x", dist.Normal(parts.sum(w), 0.5), obs=x)


def test_an_aligned_argument_is_drawn_as_the_user_wrote_it_inside_its_plate():
    labels, mask = torch.randn(3, 2), torch.tensor([[1, 1], [1, 0], [0, 0]], dtype=torch.bool)
    graph = pgmdl.compile(part_model, labels, mask, torch.randn(3))
    assert list(graph.inputs) == ["labels@parts"]  # the graph's own name for it
    source = pgmdl.render(graph, guide="nami").source
    assert "labels@parts" not in source  # node ids escape "@" (_40_); no label has it
    for panel in ("model", "guide"):
        box = source.index(f"subgraph cluster_{panel}_data__parts {{")
        node = source.index(f"{panel}_2f_input_20_labels_40_parts [label=labels ")
        assert box < node < source.index("}", box)  # inside the parts box
    assert 'tooltip="model argument labels, aligned to multiset plate parts"' in source
    assert {"node:input", "multiset"} <= legend_keys(source)


def test_input_view_of_ordinary_and_aligned_inputs(graph):
    assert render_module.input_view(graph, "c") == ("c", (), "")
    labels, mask = torch.randn(2, 2), torch.ones(2, 2, dtype=torch.bool)
    aligned = pgmdl.compile(part_model, labels, mask)
    assert render_module.input_view(aligned, "labels@parts")[:2] == ("labels", ("data", "parts"))


def test_a_guide_plan_is_drawn_with_free_sites_and_mean_field_edges():
    from pgmdl.guides.plan import plan_guide
    from pgmdl.render import node_id

    def model(x):
        mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
        with pyro.plate("data", x.shape[0]):
            z2 = pyro.sample("z2", dist.Normal(mu, 1.0))
            z1 = pyro.sample("z1", dist.Normal(z2, 1.0))
            pyro.sample("x", dist.Normal(z1, 1.0), obs=x)

    x = torch.zeros(4)
    graph = pgmdl.compile(model, x)
    plan = plan_guide(graph, structure="mean-field")
    source = pgmdl.render(graph, guide=plan).source
    assert "guide plan (mean-field, min-fill)" in source
    assert "free parameters" in source  # mu
    edge = f"{node_id('guide', 'x')} -> {node_id('guide', 'z2')}"
    assert edge in source  # mean field: z2 reads x, not z1
    assert f"{node_id('guide', 'z1')} -> {node_id('guide', 'z2')}" not in source
    assert "mean field, a given node the site depends on" in source  # its legend entry
    guide = pgmdl.NaMIGuide(model).setup(x)
    nami = pgmdl.render(graph, guide=guide.plan).source
    assert f"{node_id('guide', 'z1')} -> {node_id('guide', 'z2')}" in nami
    assert "mean field" not in nami
    other = pgmdl.compile(lambda y: pyro.sample("y", dist.Normal(0.0, 1.0), obs=y), x)
    with pytest.raises(pgmdl.ModelError, match="plan of a different model"):
        pgmdl.render(other, guide=plan)


def test_a_markov_loop_is_drawn_as_one_slice_beside_the_guides_step():
    """render(time_slice=True): step t of the loop, the previous step dashed, and
    the guide's conditional at t reading the summarized future (reverse order)
    or past (min-fill) as one node."""
    from pgmdl.datasets import LinearGaussianSSM

    ssm = LinearGaussianSSM()
    data = ssm.sample(4, 9, torch.Generator().manual_seed(0))
    reverse = pgmdl.render(
        ssm.model, model_args=(data.x,), guide="nami", order="reverse", time_slice=True
    ).source
    assert 'label="z_{t-1}"' in reverse and 'label="x_{t..T}"' in reverse
    assert "box3d" in reverse and "z_4" not in reverse  # one slice, not the unrolled loop
    minfill = pgmdl.render(ssm.model, model_args=(data.x,), guide="nami", time_slice=True).source
    assert 'label="z_{t+1}"' in minfill and 'label="x_{0..t}"' in minfill
    with pytest.raises(pgmdl.ModelError, match="no pyro.markov loop"):
        pgmdl.render(lambda: pyro.sample("a", dist.Normal(0.0, 1.0)), time_slice=True)
