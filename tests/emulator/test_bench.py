"""Instruction budgets of the classify paths (deterministic: instructions
executed inside wfpmon.sys in the emulator, not time). Measured on the
current image: flow established ≈ 220, stream 39, datagram 66 plus ≈ 8 per
extra NET_BUFFER. The stream path must stay within 50 (the scale issue's
goal); the other budgets leave room for change but catch a per-packet path
that starts doing real work (a lock, a list walk, logging)."""

from bench import measure

BUDGETS = {
    "flow established (TCP/IPv4, tracked)": 600,
    "stream data (one indication)": 50,
    "datagram data (one NET_BUFFER)": 150,
    "datagram data (8 NET_BUFFERs)": 250,
}


def test_classify_paths_stay_within_their_instruction_budgets(image):
    counts = measure(image)
    assert set(counts) == set(BUDGETS)
    over = {path: (n, BUDGETS[path]) for path, n in counts.items() if n > BUDGETS[path]}
    assert not over, over
    assert all(n > 0 for n in counts.values()), "the counter saw no driver code"
    # Cost grows with the NET_BUFFERs of a list, and only modestly.
    per_buffer = (counts["datagram data (8 NET_BUFFERs)"] - counts["datagram data (one NET_BUFFER)"]) / 7
    assert 0 < per_buffer <= 12, per_buffer
