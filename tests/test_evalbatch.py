"""A stack's evaluations reach the tracker one evaluation step at a time (suite.engine.evalbatch)."""

from suite.engine.evalbatch import EvalBatches


def test_rows_of_one_step_go_together_and_flush_ends_a_batch():
    sent = []
    batches = EvalBatches(sent.append)
    for step in (0, 10):
        for j in range(3):
            batches.add(j, step, {"loss": float(j + step)})
    assert sent == [[(0, 0, {"loss": 0.0}), (1, 0, {"loss": 1.0}), (2, 0, {"loss": 2.0})]]
    batches.add(1, 20, {"loss": 1.5})  # a row stopped: the others go on at the next step
    assert [len(b) for b in sent] == [3, 3]
    batches.flush()
    batches.flush()  # nothing left: nothing sent
    assert sent[-1] == [(1, 20, {"loss": 1.5})] and len(sent) == 3
