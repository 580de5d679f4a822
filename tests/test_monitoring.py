"""The training loop's logging window and divergence guard, alone: no model,
no data, a fake writer, bar and clock."""

import math

import jax.numpy as jnp
import pytest

from prompt_tuning.training import monitoring
from prompt_tuning.training import run_settings


class FakeWriter:
  def __init__(self):
    self.written, self.flushes = [], 0

  def write_scalars(self, step, scalars):
    self.written.append((step, scalars))

  def flush(self):
    self.flushes += 1


class FakeBar:
  def __init__(self):
    self.postfix = None

  def set_postfix(self, **kwargs):
    self.postfix = kwargs


class FakeClock:
  def __init__(self):
    self.now = 100.0

  def __call__(self):
    return self.now


def step_metrics(loss=2.0, tokens=10.0, norm=1.0, ratio=0.01, nonfinite=0.0):
  """One step's scalars as `steps.train_step` returns them."""
  return {k: jnp.float32(v) for k, v in dict(
      loss=loss, num_tokens=tokens, z_loss=0.1, accuracy_correct=tokens / 2,
      grad_norm=0.5, trainable_norm=norm, update_ratio=ratio,
      nonfinite_params=nonfinite).items()}


def test_window_sums_steps_and_takes_maxima_of_norms():
  summed = monitoring.accumulate({}, step_metrics(norm=3.0, ratio=0.2))
  summed = monitoring.accumulate(summed, step_metrics(norm=2.0, ratio=0.5))
  assert float(summed["loss"]) == 4.0 and float(summed["num_tokens"]) == 20
  assert float(summed["trainable_norm"]) == 3.0  # The maximum, not the sum.
  assert float(summed["update_ratio"]) == 0.5


def test_window_writes_means_speeds_and_postfix_then_restarts():
  writer, bar, clock = FakeWriter(), FakeBar(), FakeClock()
  window = monitoring.LogWindow(writer, bar, clock=clock)
  assert window.totals() is None  # Nothing to log yet.
  window.add(step_metrics(loss=3.0), num_tokens=100)
  window.add(step_metrics(loss=1.0), num_tokens=100)
  clock.now += 4.0
  totals = window.totals()
  assert totals["loss"] == 4.0 and isinstance(totals["loss"], float)
  values = window.write(10, totals, padding_share=0.25)
  assert values["loss"] == 2.0  # Mean over the window's 2 steps.
  assert values["loss_per_token"] == pytest.approx(4.0 / 20)
  assert values["accuracy"] == pytest.approx(0.5)
  assert values["z_loss"] == pytest.approx(0.1)
  assert values["steps_per_second"] == pytest.approx(0.5)
  assert values["tokens_per_second"] == pytest.approx(50.0)
  assert values["padding_share"] == 0.25
  assert writer.written == [(10, values)] and writer.flushes == 1
  assert bar.postfix == {"loss": "2.000", "steps_s": "0.50",
                         "tokens_s": "50"}
  assert window.history == [(10, values)]
  # The next window starts empty, timed from the write.
  assert window.totals() is None
  window.add(step_metrics(loss=5.0), num_tokens=10)
  clock.now += 1.0
  later = window.write(11, window.totals(), padding_share=0.0)
  assert later["loss"] == 5.0 and later["steps_per_second"] == 1.0
  assert [step for step, _ in window.history] == [10, 11]


def _guard(**limits):
  return monitoring.DivergenceGuard(
      run_settings.DivergenceGuardConfig(**limits), reference_norm=2.0,
      reference_step=7)


def _totals(**overrides):
  totals = {"loss": 1.0, "nonfinite_params": 0.0, "update_ratio": 0.1,
            "trainable_norm": 2.0}
  return {**totals, **overrides}


def test_guard_passes_a_normal_window():
  _guard().check(_totals(), 10)
  _guard().check(_totals(update_ratio=99.0, trainable_norm=19_999.0), 10)


@pytest.mark.parametrize("totals", [
    _totals(loss=math.nan), _totals(loss=math.inf),
    _totals(nonfinite_params=3.0)])
def test_guard_stops_on_nan_or_inf(totals):
  with pytest.raises(monitoring.NonFiniteLossError,
                     match=r"by step 12; the last good.*Lower LEARNING_RATE"):
    _guard().check(totals, 12, "; the last good checkpoint is step 10.")


def test_guard_stops_on_a_huge_update_and_names_the_switch():
  with pytest.raises(monitoring.DivergenceError,
                     match=r"an update was 150 times.*max_update_ratio=100\)"
                     r"\. .*DivergenceGuardConfig\.max_update_ratio=None"):
    _guard().check(_totals(update_ratio=150.0), 12)
  _guard(max_update_ratio=None).check(_totals(update_ratio=1e9), 12)
  _guard(max_update_ratio=1e3).check(_totals(update_ratio=150.0), 12)


def test_guard_stops_when_the_norm_grew_past_the_limit():
  with pytest.raises(monitoring.DivergenceError,
                     match=r"norm is 3e\+04, 1.5e\+04 times its value 2 at "
                     r"step 7 \(limit max_norm_growth=10000\)"):
    _guard().check(_totals(trainable_norm=30_000.0), 12)
  _guard(max_norm_growth=None).check(_totals(trainable_norm=1e9), 12)
  # A zero starting norm (e.g. a zero-initialised head) has no scale.
  monitoring.DivergenceGuard(run_settings.DivergenceGuardConfig(), 0.0,
                             0).check(_totals(trainable_norm=1e9), 12)
