import numpy as np
import pytest

from nezha.train.distributed import EpochSampler


@pytest.mark.parametrize("n,batch,accum,world", [(103, 8, 2, 2), (40, 4, 1, 3), (5, 4, 2, 2), (64, 16, 4, 1)])
def test_epoch_sampler_reads_every_instance_once_per_epoch(n, batch, accum, world):
    for epoch in range(2):
        seen = []
        samplers = [
            EpochSampler(n, batch_size=batch, accum=accum, rank=r, world_size=world, seed=7) for r in range(world)
        ]
        spe = samplers[0].steps_per_epoch
        for step in range(epoch * spe, (epoch + 1) * spe):
            for s in samplers:
                mbs = s.micro_batches(step)
                assert len(mbs) == accum
                seen += [i for idx, real in mbs if real for i in idx.tolist()]
        assert sorted(seen) == list(range(n))


def test_epoch_sampler_two_ranks_read_what_one_rank_with_double_batch_reads():
    one = EpochSampler(50, batch_size=8, accum=1, rank=0, world_size=1, seed=3)
    two = [EpochSampler(50, batch_size=4, accum=1, rank=r, world_size=2, seed=3) for r in range(2)]
    for step in range(12):
        joined = np.concatenate([s.micro_batches(step)[0][0] for s in two])
        np.testing.assert_array_equal(joined, one.micro_batches(step)[0][0])


def test_epoch_sampler_permutation_changes_with_epoch_and_is_seeded():
    s = EpochSampler(30, batch_size=5, accum=1, rank=0, world_size=1, seed=1)
    assert not np.array_equal(s.permutation(0), s.permutation(1))
    np.testing.assert_array_equal(s.permutation(1), EpochSampler(30, batch_size=5, accum=1, rank=0, world_size=1,
                                                                  seed=1).permutation(1))


def test_epoch_sampler_rejects_batch_not_divisible_by_accumulation():
    with pytest.raises(ValueError, match="multiple of gradient_accumulation_steps"):
        EpochSampler(10, batch_size=5, accum=2, rank=0, world_size=1, seed=0)
