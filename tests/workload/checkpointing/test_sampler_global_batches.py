"""`sampler.GlobalBatchSampler`: the same global batches at any world size (issue 24, point 2).

What accelerate does with a batch sampler on W ranks is imitated with its own
`BatchSamplerShard` (batch i to rank i % W), the class `accelerator.prepare` wraps it in."""

from __future__ import annotations

import pytest
from accelerate.data_loader import BatchSamplerShard, SkipBatchSampler

from kubetune.contract.spec.job import SpecError, validate_spec
from kubetune.workload.checkpointing.sampler import GlobalBatches, GlobalBatchSampler
from kubetune.workload.stages.run import global_batch


def steps_seen(n: int, global_batch_size: int, batch: int, world: int, seed: int = 7, epoch: int = 0,
               lengths: list[int] | None = None, skip_steps: int = 0) -> list[list[int]]:
    """Each optimizer step's samples as the ranks see them: rank r's micro-batches, from
    accelerate's shard of the sampler, joined in rank order."""
    sampler = GlobalBatchSampler(n, global_batch_size, batch, world, seed, lengths)
    sampler.set_epoch(epoch)
    accumulation = global_batch_size // (batch * world)
    ranks = []
    for rank in range(world):
        shard = BatchSamplerShard(sampler, num_processes=world, process_index=rank) if world > 1 else sampler
        if skip_steps:  # the Trainer's resume: skip_first_batches of this rank's batches
            shard = SkipBatchSampler(shard, skip_batches=skip_steps * accumulation)
        ranks.append(list(shard))
    per_rank_steps = len(ranks[0]) // accumulation
    assert all(len(r) == len(ranks[0]) for r in ranks)
    return [[i for rank in ranks for b in rank[s * accumulation:(s + 1) * accumulation] for i in b]
            for s in range(per_rank_steps)]


@pytest.mark.parametrize("lengths", [None, [(i * 37) % 50 + 1 for i in range(96)]], ids=["random", "length-grouped"])
def test_every_world_size_trains_the_same_global_batches(lengths):
    one, two, four = (steps_seen(96, 16, 4, w, lengths=lengths) for w in (1, 2, 4))
    assert len(one) == 6
    assert [sorted(s) for s in one] == [sorted(s) for s in two] == [sorted(s) for s in four]
    assert sorted(i for s in one for i in s) == list(range(96))  # each sample once in the epoch


def test_an_incomplete_last_global_batch_is_left_out_and_epochs_reshuffle():
    epoch0, epoch1 = steps_seen(100, 16, 4, 2, epoch=0), steps_seen(100, 16, 4, 2, epoch=1)
    assert len(epoch0) == len(epoch1) == 6  # 96 of 100 samples; never half a global batch
    assert len({i for s in epoch0 for i in s}) == 96
    assert epoch0 != epoch1


def test_a_resume_at_another_world_size_continues_at_the_next_unseen_sample():
    full = steps_seen(96, 16, 4, 2)
    after_three_on_one = steps_seen(96, 16, 4, 1, skip_steps=3)
    after_three_on_four = steps_seen(96, 16, 4, 4, skip_steps=3)
    assert after_three_on_one == full[3:]
    assert [sorted(s) for s in after_three_on_four] == [sorted(s) for s in full[3:]]


def test_the_position_is_global_samples_consumed_and_a_changed_global_batch_is_refused():
    batches = GlobalBatches(16, 4, 2, seed=7, grouped=False)
    batches.make(list(range(96)))
    position = batches.position(global_step=8)
    assert position["samples_consumed"] == 128 and position["epoch"] == 1
    other = GlobalBatches(32, 4, 1, seed=7, grouped=False)
    with pytest.raises(SpecError, match="train.global_batch_size"):
        other.restore(position)
    again = GlobalBatches(16, 4, 1, seed=7, grouped=False)
    again.restore(position)
    assert again.make(list(range(96))).epoch == 1


def _spec(nodes, **train):
    return validate_spec({"name": "elastic", "model": {"source": "sentence-transformers/all-MiniLM-L6-v2"},
                          "data": {"train": "t.csv", "validation": "v.csv"},
                          "resources": {"nodes": nodes}, "train": {"batch_size": 4, **train}})


def test_the_global_batch_defaults_to_the_full_gang_and_refuses_a_world_size_that_cannot_split_it():
    assert global_batch(_spec(2), 2) is None  # a fixed gang: the Trainer's own batches
    assert global_batch(_spec({"min": 1, "max": 2}, gradient_accumulation_steps=2), 1) == 16
    assert global_batch(_spec(1, global_batch_size=24), 1) == 24
    with pytest.raises(SpecError, match=r"^train.global_batch_size: 8 samples per step cannot be split over 3"):
        global_batch(_spec({"min": 1, "max": 2}), 3)
    with pytest.raises(SpecError, match=r"^train.global_batch_size: 6 samples per step cannot be split over 1 "):
        global_batch(_spec(1, global_batch_size=6), 1)  # not even into whole batches of 4
