"""Grid cell ids: whatever changes what a cell computes changes its id; where it runs does not; the committed
cells keep theirs (issue 23, item 11)."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from attentive_cutmix.experiments.grid import load_grid

REPO = Path(__file__).resolve().parents[1]
ATTENTIVE = dict(dataset="synthetic", synthetic_size=48, model="cifar_resnet20", epochs=1, batch_size=16,
                 workers=0, progress=False, method="attentive-cutmix")


def _ids(tmp_path: Path, name: str, **spec) -> list[str]:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return [c.id for c in load_grid(path).cells]


def test_an_explicit_attention_cache_is_part_of_the_cell_id(tmp_path):
    # Two grids into one folder that differ only in the cache: the second must not find the first's cells
    # "finished" and report their results as its own.
    a = _ids(tmp_path, "a", settings={**ATTENTIVE, "attention_cache": "caches/a.safetensors"}, axes={"seed": [0]})
    b = _ids(tmp_path, "b", settings={**ATTENTIVE, "attention_cache": "caches/b.safetensors"}, axes={"seed": [0]})
    assert a != b
    assert a == _ids(tmp_path, "a2", settings={**ATTENTIVE, "attention_cache": "caches/a.safetensors"},
                     axes={"seed": [0]})


def test_an_attention_cache_axis_makes_one_cell_per_cache(tmp_path):
    ids = _ids(tmp_path, "axis", settings=ATTENTIVE,
               axes={"attention_cache": ["caches/a.safetensors", "caches/b.safetensors"]})
    assert len(set(ids)) == 2


@pytest.mark.parametrize("grid", ["cifar10-jpeg-converged", "cifar10-jpeg-paper-recipe"])
def test_committed_cells_keep_their_ids(grid):
    # Their grids use `attention_cache: true` (the cache compare builds): the id of those cells must not move,
    # or their committed results would no longer be found.
    # The variants grid extends the converged one into the same folder: a run there belongs to one of the grids.
    ids = {c.id for path in (REPO / "configs" / "results").glob("*.yaml") for c in load_grid(path).cells}
    assert {c.id for c in load_grid(REPO / "configs" / "results" / f"{grid}.yaml").cells} <= ids
    committed = {d.name for d in (REPO / "results" / grid / "runs").iterdir() if d.is_dir()}
    assert committed and committed <= ids


@pytest.mark.parametrize("axes", [{"seed": [0, 0, 1]}, {"method": ["none", "cutmix", "none"]}])
def test_a_value_listed_twice_on_an_axis_is_refused_not_merged(tmp_path, axes):
    from attentive_cutmix.experiments.grid import GridError

    with pytest.raises(GridError, match=r"lists '(0|none)' twice"):
        _ids(tmp_path, "twice", settings={k: v for k, v in ATTENTIVE.items() if k != "method"}, axes=axes)
