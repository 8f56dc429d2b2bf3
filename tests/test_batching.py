"""Length-bucketed batching: padding, masks, coverage, determinism per (seed, epoch), padding savings."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from _paths import data_dir
from gatedrnn.data import load_dataset
from gatedrnn.data.batching import Batch, batch_order, collate, iterate_batches, padding_fraction


def _pairs(lengths, width=5, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for T in lengths:
        y = (rng.random((T, width)) < 0.3).astype(np.uint8)
        x = np.zeros_like(y)
        x[1:] = y[:-1]
        out.append((x, y))
    return out


LENGTHS = [7, 3, 12, 3, 9, 1, 7, 7, 20, 2, 5, 3, 11]


def test_padding_mask_lengths():
    pairs = _pairs(LENGTHS)
    seen = []
    for b in iterate_batches(pairs, 4, shuffle=True, seed=3, epoch=1):
        assert isinstance(b, Batch)
        B, T = len(b.index), int(b.lengths.max())
        assert b.inputs.shape == (B, T, 5) and b.targets.shape == (B, T, 5) and b.mask.shape == (B, T)
        assert b.inputs.dtype == b.targets.dtype == torch.float32
        assert b.lengths.dtype == torch.int64 and b.lengths.device.type == "cpu"
        assert b.mask.dtype == torch.bool
        for row, i in enumerate(b.index):
            L = LENGTHS[i]
            assert int(b.lengths[row]) == L
            assert b.mask[row, :L].all() and not b.mask[row, L:].any()
            np.testing.assert_array_equal(b.inputs[row, :L].numpy(), pairs[i][0].astype(np.float32))
            np.testing.assert_array_equal(b.targets[row, :L].numpy(), pairs[i][1].astype(np.float32))
            assert not b.inputs[row, L:].any() and not b.targets[row, L:].any()
        seen += b.index
    assert sorted(seen) == list(range(len(LENGTHS)))


@pytest.mark.parametrize("shuffle", [True, False])
@pytest.mark.parametrize("bs", [1, 4, 5, 13, 50])
def test_every_sequence_once_per_epoch(shuffle, bs):
    lengths = np.random.default_rng(1).integers(1, 60, size=101).tolist()
    for epoch in range(3):
        batches = batch_order(lengths, bs, shuffle=shuffle, seed=7, epoch=epoch)
        flat = [i for b in batches for i in b]
        assert sorted(flat) == list(range(101))
        assert all(1 <= len(b) <= bs for b in batches)
        assert len(batches) == -(-101 // bs)


def test_deterministic_per_seed_and_epoch_and_independent_of_global_rng():
    lengths = np.random.default_rng(2).integers(1, 30, size=80).tolist()   # many ties
    np.random.seed(123)
    torch.manual_seed(123)
    a = batch_order(lengths, 8, shuffle=True, seed=5, epoch=4)
    state = np.random.get_state()[1].copy()
    np.random.seed(999)
    torch.manual_seed(999)
    b = batch_order(lengths, 8, shuffle=True, seed=5, epoch=4)
    assert a == b                                                    # global RNGs do not matter
    np.random.seed(123)
    batch_order(lengths, 8, shuffle=True, seed=5, epoch=4)
    np.testing.assert_array_equal(np.random.get_state()[1], state)   # and are not consumed
    assert batch_order(lengths, 8, shuffle=True, seed=5, epoch=5) != a
    assert batch_order(lengths, 8, shuffle=True, seed=6, epoch=4) != a
    # the same through iterate_batches (what a resumed run at epoch 4 sees)
    pairs = _pairs(lengths)
    got = [bt.index for bt in iterate_batches(pairs, 8, shuffle=True, seed=5, epoch=4)]
    assert got == a


def test_no_shuffle_is_sorted_and_fixed():
    batches = batch_order(LENGTHS, 4, shuffle=False, seed=1, epoch=0)
    assert batches == batch_order(LENGTHS, 4, shuffle=False, seed=99, epoch=7)
    flat = [i for b in batches for i in b]
    assert [LENGTHS[i] for i in flat] == sorted(LENGTHS)
    assert flat == sorted(range(len(LENGTHS)), key=lambda i: (LENGTHS[i], i))   # ties by position


def test_buckets_keep_similar_lengths_together_when_shuffled():
    lengths = np.random.default_rng(3).integers(1, 500, size=200)
    batches = batch_order(lengths, 10, shuffle=True, seed=0, epoch=0)
    # batches hold consecutive runs of the sorted lengths
    spans = sorted((int(lengths[b].min()), int(lengths[b].max())) for b in batches)
    for (lo1, hi1), (lo2, _) in zip(spans, spans[1:]):
        assert hi1 <= lo2
    # and their order is shuffled (not sorted by length)
    firsts = [int(lengths[b].min()) for b in batches]
    assert firsts != sorted(firsts)


def test_buckets_reduce_padding_on_real_lengths():
    ds = load_dataset("nottingham", data_dir(), download=False)
    lengths = [len(y) for _, y in ds.splits["train"]]
    rng = np.random.default_rng(0)
    perm = rng.permutation(len(lengths))
    random_batches = [perm[i:i + 16].tolist() for i in range(0, len(perm), 16)]
    bucket = padding_fraction(lengths, batch_order(lengths, 16, shuffle=True, seed=0, epoch=0))
    rand = padding_fraction(lengths, random_batches)
    assert bucket < 0.1 and rand > 0.4 and bucket < rand / 4, (bucket, rand)
    # every predicted frame of the split is in exactly one batch, notes survive the float32 conversion
    steps = notes = 0
    for b in iterate_batches(ds.splits["train"], 64, shuffle=True, seed=1, epoch=0):
        steps += int(b.mask.sum())
        notes += int(b.targets.sum())
    assert steps == 176561
    assert notes == sum(int(y.sum()) for _, y in ds.splits["train"])


def test_batch_to_keeps_lengths_on_cpu():
    b = collate(_pairs([3, 5]), [1, 0])
    m = b.to("cpu")
    assert m.index == [1, 0] and m.lengths.tolist() == [5, 3] and m.inputs.shape == (2, 5, 5)
    if torch.cuda.is_available():
        g = b.to("cuda")
        assert g.inputs.is_cuda and g.targets.is_cuda and g.mask.is_cuda and g.lengths.device.type == "cpu"


def test_bad_inputs():
    with pytest.raises(ValueError):
        batch_order([1, 2], 0, shuffle=False)
    x = np.zeros((3, 2), np.uint8)
    with pytest.raises(ValueError, match="steps"):
        collate([(x, np.zeros((4, 2), np.uint8))], [0])
    assert list(iterate_batches([], 4, shuffle=True)) == []


# ------------------------------------------------------------------------------ evaluation batches
from gatedrnn.data.batching import clear_eval_cache, eval_batches  # noqa: E402


def test_eval_batches_match_iterate_batches_compactly():
    """Same batches, same order as iterate_batches(shuffle=False); uint8 where the data are, equal values."""
    pairs = _pairs(LENGTHS)
    clear_eval_cache()
    got = eval_batches(pairs, 4)
    ref = list(iterate_batches(pairs, 4, shuffle=False))
    assert [b.index for b in got] == [b.index for b in ref]
    for a, b in zip(got, ref):
        assert a.inputs.dtype == a.targets.dtype == torch.uint8          # piano-roll-like data: exact bytes
        assert torch.equal(a.float().inputs, b.inputs) and torch.equal(a.float().targets, b.targets)
        assert torch.equal(a.mask, b.mask) and torch.equal(a.lengths, b.lengths)
    # float data stay float32
    fpairs = [(x.astype(np.float32) * 0.5, y) for x, y in pairs]
    fb = eval_batches(fpairs, 4)
    assert fb[0].inputs.dtype == torch.float32 and fb[0].targets.dtype == torch.uint8


def test_eval_batches_are_cached_per_split_and_recollated_when_it_changes():
    pairs = _pairs(LENGTHS)
    clear_eval_cache()
    a = eval_batches(pairs, 4)
    assert eval_batches(pairs, 4) is a                     # collated once, reused every epoch
    assert eval_batches(pairs, 5) is not a                 # keyed by batch size too
    equal_copy = list(pairs)
    assert eval_batches(equal_copy, 4) is not a            # another split object: its own entry
    pairs[3] = _pairs([4], seed=9)[0]                      # a changed split is collated anew
    b = eval_batches(pairs, 4)
    assert b is not a
    flat = {i: row for bt in b for row, i in enumerate(bt.index)}
    bt = next(bt for bt in b if 3 in bt.index)
    np.testing.assert_array_equal(bt.inputs[bt.index.index(3), :4].numpy(), pairs[3][0])
    assert len(flat) == len(LENGTHS)
    pairs.append(_pairs([2])[0])                           # ... and a longer one
    assert sum(len(bt) for bt in eval_batches(pairs, 4)) == len(LENGTHS) + 1


def test_eval_cache_is_small():
    from gatedrnn.data import batching
    clear_eval_cache()
    splits = [_pairs([3, 4, 5], seed=s) for s in range(batching.EVAL_CACHE_SPLITS + 3)]
    for p in splits:
        eval_batches(p, 2)
    assert len(batching._eval_cache) == batching.EVAL_CACHE_SPLITS
    first = eval_batches(splits[-1], 2)
    assert eval_batches(splits[-1], 2) is first            # the most recent ones stay
    clear_eval_cache()
    assert len(batching._eval_cache) == 0
