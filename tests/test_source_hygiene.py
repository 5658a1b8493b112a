"""Library-wide rules that are easiest to check on the source itself."""
from __future__ import annotations

import re
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "attentive_cutmix"
FILES = sorted(SRC.rglob("*.py"))


def _hits(pattern: str) -> list[str]:
    rx = re.compile(pattern)
    return [f"{f.relative_to(SRC)}:{i}: {line.strip()}" for f in FILES
            for i, line in enumerate(f.read_text().splitlines(), 1) if rx.search(line)]


def test_sources_were_found():
    assert len(FILES) > 20 and SRC / "mixers" / "attentive.py" in FILES


def test_no_hard_coded_cuda_in_the_library():
    # The device comes from the inputs or an argument, never from a hard-coded .cuda() / "cuda:0".
    assert _hits(r"\.cuda\(\)|['\"]cuda:0['\"]") == []


def test_every_torch_load_is_weights_only():
    loads = _hits(r"torch\.load\(")
    assert loads, "expected the safe loader to call torch.load"
    assert [h for h in loads if "weights_only=True" not in h] == []
