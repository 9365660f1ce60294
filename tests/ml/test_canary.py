"""The canary's step decision and guardrails: a step passes only with every guardrail evaluated and met, after its
hold; any failed guardrail rolls back; a step that cannot gather its data in time rolls back too."""
from __future__ import annotations

import numpy as np
import pytest

from ml.canary import (
    ADVANCE,
    COMPLETE,
    HOLD,
    ROLLBACK,
    Guardrail,
    check_steps,
    decide_step,
    error_guardrail,
    latency_guardrail,
    loss_guardrail,
    split_guardrail,
)
from ml.config import ConfigError, parse_params

OK = [Guardrail("errors", True, "0 of 500"), Guardrail("live loss", True, "-1%")]
STEPS = [0.05, 0.25, 0.5, 1.0]


def step(**kw):
    args = {"steps": STEPS, "step": 0, "held_hours": 30, "hold_hours": 24, "max_step_hours": 96,
            "step_outcomes": 300, "min_outcomes": 200, "guardrails": OK}
    return decide_step(**{**args, **kw})


def test_a_held_healthy_step_advances_and_the_last_held_step_completes():
    d = step()
    assert d.action == ADVANCE and d.next_share == 0.25 and "step 1 of 4 (5% of units)" in d.summary
    assert step(step=2).action == COMPLETE and step(step=2).next_share == 1.0


@pytest.mark.parametrize("kw,words", [({"held_hours": 3}, "held 3.0 of 24 h"),
                                      ({"step_outcomes": 50}, "50 of 200 outcomes"),
                                      ({"guardrails": [*OK, Guardrail("latency", None, "3 timed rows")]},
                                       "not enough data for latency")])
def test_a_step_short_of_time_outcomes_or_data_holds(kw, words):
    d = step(**kw)
    assert d.action == HOLD and words in d.summary and d.next_share == 0.05


def test_a_step_still_short_of_data_after_max_step_hours_rolls_back():
    d = step(held_hours=100, step_outcomes=10)
    assert d.action == ROLLBACK and "max_step_hours" in d.summary


def test_any_failed_guardrail_rolls_back_even_before_the_hold_ends():
    d = step(held_hours=1, guardrails=[*OK, Guardrail("latency", False, "p95 40 ms")])
    assert d.action == ROLLBACK and "latency p95 40 ms" in d.summary


def test_errors_credibly_above_the_limit_fail_a_few_do_not():
    assert error_guardrail(1000, 30, 0.01, 0.05).ok is False  # 3 % of 1000: far above 1 %
    blip = error_guardrail(1000, 12, 0.01, 0.05)  # 1.2 %: above, not credibly: the step waits for more requests
    assert blip.ok is None and "not credibly yet" in blip.detail
    assert error_guardrail(1000, 5, 0.01, 0.05).ok is True
    assert error_guardrail(0, 0, 0.01, 0.05).ok is None


def test_latency_is_compared_with_the_old_model_in_the_same_step():
    rng = np.random.default_rng(0)
    old = rng.gamma(4, 0.5, 500)  # ~2 ms
    assert latency_guardrail(old, old * 1.5, 2.0, 5.0, 20).ok is True
    assert latency_guardrail(old, old + 20, 2.0, 5.0, 20).ok is False
    assert latency_guardrail(old, old[:5], 2.0, 5.0, 20).ok is None


def test_live_loss_rolls_back_only_when_credibly_worse():
    rng = np.random.default_rng(1)
    old = rng.gamma(1.0, 10, 4000)
    same, _ = loss_guardrail(old, rng.gamma(1.0, 10, 800), max_increase=0.0, alpha=0.05, mde=0.05, metric="mae")
    worse, lift = loss_guardrail(old, rng.gamma(1.0, 13, 800), max_increase=0.0, alpha=0.05, mde=0.05,
                                 metric="mae")
    assert same.ok is True and worse.ok is False and lift["ci_low"] > 0
    assert loss_guardrail(old, old[:1], max_increase=0.0, alpha=0.05, mde=0.05, metric="mae")[0].ok is None


def test_the_split_is_checked_against_the_steps_share():
    assert split_guardrail(950, 50, 0.05, 0.001).ok is True
    assert split_guardrail(500, 500, 0.05, 0.001).ok is False


@pytest.mark.parametrize("steps,words", [([], "at least one"), ([0.5, 0.25, 1.0], "increase"),
                                         ([0.05, 0.5], "end with 1.0"), ([0, 1.0], "(0, 1]")])
def test_bad_steps_are_refused_naming_the_key(steps, words):
    with pytest.raises(ValueError, match="canary.steps") as e:
        check_steps(steps)
    assert words in str(e.value)


def test_params_name_a_bad_canary_key():
    import yaml

    from tests.conftest import ROOT

    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert parse_params(raw).canary.enabled is False  # promotions stay immediate unless asked for
    raw["canary"]["steps"] = [0.1, 0.5]
    with pytest.raises(ConfigError, match="canary.steps"):
        parse_params(raw)
    raw["canary"] = {"max_step_hours": 1, "hold_hours": 24}
    with pytest.raises(ConfigError, match="max_step_hours"):
        parse_params(raw)
