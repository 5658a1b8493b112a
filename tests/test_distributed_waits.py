"""DDP ranks wait for rank 0's data preparation (e.g. `--build-cache`) however long it takes: they used to wait at
a barrier under the process group's timeout (30 min by default), so a longer build killed them."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
from safetensors.torch import save_file

from _reliability_utils import child_env
from attentive_cutmix.attention import load_extractor

pytestmark = pytest.mark.slow

# Child-only hooks: a short process-group timeout, and a cache build that takes longer than it.
SHORT_TIMEOUT_SLOW_BUILD = r'''
import os
if os.environ.get("ACM_TEST_PG_TIMEOUT_S"):
    import datetime, time
    import torch.distributed as dist
    from tqdm.auto import tqdm
    import attentive_cutmix.attention.cache as cache

    _init = dist.init_process_group

    def init_process_group(*args, **kwargs):
        kwargs.setdefault("timeout", datetime.timedelta(seconds=float(os.environ["ACM_TEST_PG_TIMEOUT_S"])))
        return _init(*args, **kwargs)

    class _SlowBuild(tqdm):
        def update(self, n=1):
            time.sleep(float(os.environ["ACM_TEST_BUILD_DELAY_S"]))
            return super().update(n)

    dist.init_process_group = init_process_group
    cache.tqdm = _SlowBuild
'''


def test_a_cache_build_longer_than_the_process_group_timeout_does_not_end_the_other_ranks(tmp_path):
    weights = tmp_path / "r20.safetensors"
    save_file(load_extractor("cifar_resnet20", input_size=32).model.state_dict(), str(weights))
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(SHORT_TIMEOUT_SLOW_BUILD)
    # The build outlasts the timeout by 6 s; a shorter timeout would risk ordinary collectives on a busy machine.
    env = child_env(ACM_TEST_PG_TIMEOUT_S=8, ACM_TEST_BUILD_DELAY_S=14)
    env["PYTHONPATH"] = os.pathsep.join([str(hooks), env.get("PYTHONPATH", "")])
    cache, out = tmp_path / "c.safetensors", tmp_path / "run"
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
            "attentive_cutmix", "train", "--dataset", "synthetic", "--synthetic-size", "64", "16", "--method",
            "attentive-cutmix", "--extractor", "cifar_resnet20", "--extractor-weights", str(weights),
            "--attention-cache", str(cache), "--build-cache", "--grid-size", "8", "--epochs", "1", "--batch-size",
            "8", "--max-steps-per-epoch", "1", "--workers", "0", "--device", "cpu", "--no-progress",
            "--output-dir", str(out)]
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=400, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert cache.is_file() and (out / "results.json").is_file()
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
