"""Schedule.step_at: the step a unit count reaches, rounded up, with float noise not counted as a step."""
from tf_mlperf.core.task import Schedule


def test_step_at_rounds_partial_steps_up():
    resnet = Schedule(steps_per_unit=392, units_per_block=4, max_units=39)
    assert [resnet.step_at(u) for u in (0, 1, 2.5, 3)] == [0, 392, 980, 1176]
    bert = Schedule(steps_per_unit=1 / 256, units_per_block=150_000, max_units=3_000_000)
    assert bert.step_at(150_000) == 586          # 585.9375 -> a partial step is a full step
    assert bert.step_at(256 * 7) == 7 and bert.step_at(256 * 7 + 1) == 8


def test_step_at_ignores_float_noise():
    assert 0.1 * 3 * 10 > 3                      # 3.0000000000000004
    assert Schedule(steps_per_unit=10, units_per_block=1, max_units=1).step_at(0.1 * 3) == 3
    assert 49 * (1 / 49) < 1                     # 0.9999999999999999
    assert Schedule(steps_per_unit=1 / 49, units_per_block=49, max_units=49).step_at(49) == 1
