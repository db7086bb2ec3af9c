"""What rain does on the ground: gauge readings, river stage, road ponding.

All on the one-minute integration grid of the scenario models (`STEP_S`), then sampled at the
reporting ticks. Inputs are rain depths per step, shape (steps, points).

- Gauges: a tipping bucket reports whole tips of `resolution` mm of what fell in the tick,
  with a multiplicative error per reading (lognormal sigma `noise`).
- River stage: a linear reservoir, dS/dt = i - S/K (the simplest rainfall-runoff model; Nash
  1957 cascades n of them), with areal rain over the station's catchment as input and stage
  rise proportional to storage.
- Ponding: a road low point collects the runoff of a larger area (`concentration` times its
  own) and loses water at the drains' capacity, so water stands while the rain is heavier
  than the drains can take and drains away afterwards.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

STEP_S = 60  # integration step of every model; a reporting tick is a whole number of steps


def per_tick(steps: FloatArray, steps_per_tick: int) -> FloatArray:
    """Sum of each tick's steps: what a gauge collects in a tick."""
    out: FloatArray = steps.reshape(-1, steps_per_tick, steps.shape[1]).sum(axis=1)
    return out


def at_tick_end(steps: FloatArray, steps_per_tick: int) -> FloatArray:
    """The state at the end of each tick: what a level sensor reads."""
    out: FloatArray = steps[steps_per_tick - 1 :: steps_per_tick]
    return out


def gauge_readings(
    rain_steps: FloatArray, steps_per_tick: int, noise: float, resolution_mm: float,
    rng: np.random.Generator,
) -> FloatArray:
    rain = per_tick(rain_steps, steps_per_tick)
    factor = np.exp(rng.normal(0.0, noise, rain.shape)) if noise > 0 else 1.0
    out: FloatArray = np.floor(rain * factor / resolution_mm + 1e-9) * resolution_mm
    return np.round(out, 3)


def reservoir_storage(inflow_steps: FloatArray, k_hours: float) -> FloatArray:
    """Storage (mm) of a linear reservoir at the end of each step, from empty."""
    # exact step for inflow constant over the step
    k_s = k_hours * 3600
    decay = math.exp(-STEP_S / k_s)
    gain = k_s * (1 - decay) / STEP_S
    storage = np.zeros(inflow_steps.shape[1])
    out = np.empty_like(inflow_steps)
    for t in range(inflow_steps.shape[0]):
        storage = storage * decay + inflow_steps[t] * gain
        out[t] = storage
    return out


def ponding_depth_cm(
    rain_steps: FloatArray, capacity_mm_h: FloatArray, concentration: FloatArray
) -> FloatArray:
    """Standing water (cm) at the end of each step, from a dry road."""
    capacity = capacity_mm_h * STEP_S / 3600  # mm per step
    depth_mm = np.zeros(rain_steps.shape[1])
    out = np.empty_like(rain_steps)
    for t in range(rain_steps.shape[0]):
        depth_mm = np.maximum(depth_mm + concentration * (rain_steps[t] - capacity), 0.0)
        out[t] = depth_mm
    cm: FloatArray = out * 0.1
    return cm
