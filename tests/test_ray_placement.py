"""The cluster driver's placement and migration rules (pure Python: no Ray needed)."""

from __future__ import annotations

from lmos.drivers.ray_placement import Placement, choose_move, imbalance, prefix_hashes

SYSTEM = list(range(100, 140))  # 40 tokens: two full blocks of 16


def test_prefix_hashes_cover_full_blocks_but_never_the_last_token() -> None:
    assert len(prefix_hashes(list(range(33)), 16)) == 2
    assert len(prefix_hashes(list(range(32)), 16)) == 1  # the last token's block stays out
    assert prefix_hashes([*SYSTEM, 1], 16) == prefix_hashes([*SYSTEM, 2, 3], 16)
    assert prefix_hashes([1, *SYSTEM], 16)[0] != prefix_hashes(SYSTEM, 16)[0]


def test_shared_prompt_lands_where_its_prefix_is_until_load_wins() -> None:
    p = Placement(2, 16, slack=2)
    picks = []
    for i in range(6):
        r = p.choose([*SYSTEM, i])
        p.placed(r, [*SYSTEM, i])
        picks.append(r)
    # the first goes to the least loaded; the next two follow its prefix; the fourth would make the
    # prefix holder busier than the other by more than the slack, so load wins, and from then on
    # both replicas hold the prefix and the less loaded one is taken
    assert picks[:3] == [0, 0, 0] and picks[3] == 1
    assert sorted(p.loads) == [3, 3]
    assert p.stats.placed == 6


def test_unrelated_prompts_go_to_the_least_loaded() -> None:
    p = Placement(3, 16)
    for i in range(6):
        r = p.choose([i] * 40)
        p.placed(r, [i] * 40)
    assert p.loads == [2, 2, 2]


def test_dead_replicas_are_never_chosen_and_random_mode_spreads() -> None:
    p = Placement(3, 16, mode="random", seed=1)
    p.died(1)
    seen = {p.choose(SYSTEM) for _ in range(50)}
    assert seen == {0, 2}
    p.died(0)
    p.died(2)
    try:
        p.choose(SYSTEM)
    except ValueError:
        pass
    else:
        raise AssertionError("no live replica must be an error")


def test_hit_rate_counts_replica_reports() -> None:
    p = Placement(2, 16)
    p.record_hits([(40, 0), (41, 32), (42, 32)])
    assert p.stats.hit_rate == 64 / 123


def test_imbalance_moves_half_the_gap() -> None:
    assert imbalance({0: 6, 1: 0}, [0, 1], threshold=3) == (0, 1, 3)
    assert imbalance({0: 3, 1: 1}, [0, 1], threshold=3) is None
    assert imbalance({0: 9}, [0], threshold=3) is None  # one live replica: nowhere to go
    assert imbalance({0: 5, 2: 0}, [0, 1, 2], threshold=2) == (0, 1, 2)


def test_cost_model_moves_long_contexts_over_fast_links_and_recomputes_otherwise() -> None:
    # 4096 tokens of KV = 64 MiB: over 10 GB/s that is ~7 ms; a 2,000 tok/s prefill takes 2 s
    assert choose_move(4096, 64 << 20, 2000.0, 10e9)[0] == "move"
    # the same over a 10 MB/s link takes 6.7 s: recompute
    assert choose_move(4096, 64 << 20, 2000.0, 10e6)[0] == "recompute"
    # nothing computed: nothing to move
    assert choose_move(0, 0, 2000.0, 10e9) == ("recompute", 0.0)
