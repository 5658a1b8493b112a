"""SIGKILL at random moments (and in the middle of a checkpoint write), then ``--resume``: no lost checkpoint,
at most one epoch of work lost per kill, and the same final metrics and weights as an uninterrupted run.

Also: same seed twice gives bit-identical metrics on CPU, and the per-rank seeds of DDP differ but are fixed.
"""
from __future__ import annotations

import os
import random
import signal
import time

import pytest
import torch

from _reliability_utils import (
    RUN_OPTS,
    STEPS_PER_EPOCH,
    TOTAL_STEPS,
    Child,
    assert_same_as_baseline,
    assert_same_weights,
    baseline_run,
    checkpoint_position,
    child_env,
    count_lines,
    hooks_dir,
    model_weights,
    strip_timing,
    train_argv,
    wait_for,
)


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    return baseline_run(tmp_path_factory.mktemp("baseline"))


@pytest.mark.slow
def test_sigkill_at_random_moments_and_mid_checkpoint_write_then_resume_matches_uninterrupted(tmp_path, baseline):
    seed = int(os.environ.get("ACM_KILL_SEED", time.time_ns() % 2**32))
    rng = random.Random(seed)
    out, hooks = tmp_path / "run", hooks_dir(tmp_path)
    plan = ["random", "checkpoint-write", "random"]  # then one more process runs to the end
    kills: list[dict] = []
    steps_run = 0
    for segment in range(len(plan) + 1):
        mode = plan[segment] if segment < len(plan) else "finish"
        start = checkpoint_position(out)
        stale_tmp = set(out.glob(".checkpoint.pt.*.tmp"))
        log = tmp_path / f"steps-{segment}.log"
        extra = {"ACM_TEST_SLOW_SAVE": 5} if mode == "checkpoint-write" else {}
        env = child_env(hooks, ACM_TEST_STEP_LOG=log, ACM_TEST_STEP_DELAY=0.05, **extra)
        child = Child(train_argv(out, {**RUN_OPTS, **({"resume": True} if segment else {})}), env,
                      tmp_path / f"seg-{segment}")
        if mode == "random":
            # The first kill lands after this process wrote a checkpoint, the later ones anywhere in its
            # first two epochs.
            target = rng.randint(STEPS_PER_EPOCH + 1 if not kills else 1,
                                 min(2 * STEPS_PER_EPOCH, TOTAL_STEPS - start - 1))
            if wait_for(lambda: count_lines(log) >= target, child):
                time.sleep(rng.uniform(0.0, 0.25))  # anywhere in a step, an eval or a checkpoint write
                child.kill()
        elif mode == "checkpoint-write":
            writing = lambda: any(p.stat().st_size > 0 for p in set(out.glob(".checkpoint.pt.*.tmp")) - stale_tmp)  # noqa: E731
            assert wait_for(writing, child), child.stderr()
            child.kill()
        rc = child.wait()
        done = start + count_lines(log)
        steps_run += count_lines(log)
        if rc == 0:
            break
        assert rc == -signal.SIGKILL, child.stderr()
        saved = checkpoint_position(out)  # checkpoint.pt is absent or a complete, safely loadable checkpoint
        lost = done - saved
        assert saved >= start and saved % STEPS_PER_EPOCH == 0  # never goes back; SIGKILL leaves only epoch checkpoints
        assert 0 <= lost <= STEPS_PER_EPOCH, (done, saved)  # at most the work since the last completed checkpoint
        if mode == "checkpoint-write":
            assert saved == start and lost == count_lines(log)  # the half-written temp file did not replace the old one
        kills.append({"mode": mode, "steps_done": done, "checkpoint_at": saved, "lost_steps": lost})
    assert rc == 0 and len(kills) == len(plan), kills
    assert steps_run == TOTAL_STEPS + sum(k["lost_steps"] for k in kills)  # lost work was redone, nothing else
    assert_same_as_baseline(out, baseline)
    print(f"\nkill/resume (ACM_KILL_SEED={seed}): {len(kills)} SIGKILLs, steps per epoch {STEPS_PER_EPOCH}, "
          f"total {TOTAL_STEPS}; lost steps per kill {[k['lost_steps'] for k in kills]}, at most "
          f"{max(k['lost_steps'] for k in kills)}; {kills}")


def test_same_seed_twice_is_bit_identical_on_cpu(tmp_path):
    # (The kill test above also checks a resumed subprocess run against an uninterrupted one, bit for bit.)
    from attentive_cutmix.training import make_config, train

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        opts = {**RUN_OPTS, "epochs": 2, "progress": False}
        runs = [train(make_config({**opts, "output_dir": str(tmp_path / name)})) for name in ("a", "b")]
        other = train(make_config({**opts, "epochs": 1, "seed": 8, "output_dir": str(tmp_path / "c")}))
    finally:
        torch.set_num_threads(before)
    assert strip_timing(runs[0]["curve"]) == strip_timing(runs[1]["curve"])
    assert_same_weights(model_weights(tmp_path / "a"), model_weights(tmp_path / "b"))
    assert other["curve"][0]["train_loss"] != runs[0]["curve"][0]["train_loss"]  # the seed matters


def test_ddp_ranks_get_different_but_reproducible_mixer_seeds():
    from attentive_cutmix.mixers.base import pair_permutation
    from attentive_cutmix.training.components import derive_seed

    def perm(seed, rank, epoch):  # as the trainer seeds each rank's mixer generator at the start of an epoch
        return pair_permutation(64, torch.Generator().manual_seed(derive_seed(seed, rank, epoch)))

    ranks = [perm(0, r, 1) for r in range(4)]
    assert all(not torch.equal(ranks[i], ranks[j]) for i in range(4) for j in range(i + 1, 4))
    assert all(torch.equal(perm(0, r, 1), ranks[r]) for r in range(4))  # the same on every run
    assert not torch.equal(perm(0, 0, 2), ranks[0]) and not torch.equal(perm(1, 0, 1), ranks[0])
    seeds = {derive_seed(s, r, e) for s in range(3) for r in range(8) for e in range(1, 50)}
    assert len(seeds) == 3 * 8 * 49


def test_trainer_seeds_the_mixer_generator_per_rank_and_epoch():
    from attentive_cutmix.training import make_config
    from attentive_cutmix.training import trainer as trainer_mod
    from attentive_cutmix.training.components import derive_seed
    from attentive_cutmix.training.distributed import DistInfo

    class Stop(Exception):
        pass

    class StopAtFirstBatch:
        def epoch(self, epoch, start=0):
            raise Stop

    run = trainer_mod._Run.__new__(trainer_mod._Run)
    run.cfg = make_config({"seed": 5})
    run.dist, run.step, run.generator = DistInfo(rank=3, world_size=4), 0, torch.Generator()
    run.batches, run.device = StopAtFirstBatch(), torch.device("cpu")
    with torch.random.fork_rng(devices=[]), pytest.raises(Stop):
        run._train_epoch(2, None, None)
    expected = torch.Generator().manual_seed(derive_seed(5, 3, 2)).get_state()
    assert torch.equal(run.generator.get_state(), expected)
