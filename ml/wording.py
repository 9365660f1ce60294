"""How numbers are written for people: in the contract's rules and the sentences that explain a failed rule, and
the losses in the decision lines.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

# --------------------------------------------------------------------------------------------------------- format


def fmt(x: Any) -> str:
    """Numbers for people: thousands separators, at most 4 significant digits below 1,000."""
    if isinstance(x, (pd.Timestamp, np.datetime64)):
        return f"{pd.Timestamp(x):%Y-%m-%d %H:%M %Z}".strip()
    if isinstance(x, (bool, np.bool_)) or not isinstance(x, (int, float, np.number)):
        return repr(x)
    if isinstance(x, (int, np.integer)) or abs(x) >= 1000:
        return f"{x:,.0f}"
    return f"{x:.4g}"


def num(x: float) -> float | int:
    """A plain Python number, integral values as int (JSON- and display-friendly): 6 decimals, or 6 significant
    digits below 0.01 (a column measured in g/m³, quartiles about 0.00001, kept 2 digits of 6 decimals)."""
    x = float(x)
    if x.is_integer():
        return int(x)
    if abs(x) < 1e-12:  # float noise of a difference that is 0
        return 0
    return round(x, 6) if abs(x) >= 0.01 else float(f"{x:.6g}")


def metric_text(x: float, decimals: int = 2) -> str:
    """A loss or score for people: `decimals` decimals, and 3 significant digits below 0.1 (a pollutant measured in
    g/m³ has an MAE of 0.0000212, which two decimals print as 0.00 against a naive baseline of 0.00)."""
    x = float(x)
    return f"{x:.{decimals}f}" if x == 0 or abs(x) >= 0.1 or math.isnan(x) else f"{x:.3g}"


def better_or_worse(gain: float) -> str:
    """A relative gain over a reference in words: '41.3% better', '41.3% worse' (never '-41.3% better')."""
    return f"{abs(gain):.1%} {'better' if gain >= 0 else 'worse'}"


def pct(p: float) -> str:
    """An observed share of rows: one decimal, two significant digits when tiny (never a misleading 0.0%)."""
    return f"{p:.2g}%" if 0 < p < 0.1 else f"{p:.1f}%"


def limit(p: float) -> str:
    """A configured or allowed share: as short as possible ('2%', '5.3%')."""
    return f"{round(p, 1):g}%"


def interval(lo: Any, hi: Any) -> str:
    return f"[{'-inf' if lo is None else fmt(lo)} .. {'inf' if hi is None else fmt(hi)}]"


def quantile_name(q: float) -> str:
    return "median" if q == 0.5 else f"p{q * 100:g}"


def examples(res: dict, n: int = 3) -> str:
    values = list(dict.fromkeys(fmt(v) for v in res.get("partial_unexpected_list") or []))[:n]
    return ", ".join(values) if values else "no examples"
