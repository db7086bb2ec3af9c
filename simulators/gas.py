"""A gas leak ramping up at one point and spreading to its neighbours.

Leaked gas in a city does not spread in open air so much as along enclosed spaces: pipe
trenches, culverts, sewers and basements (the 2021 Shiyan market explosion followed gas that
had collected in a culvert under the building). We treat that network as one dimension with
diffusion and a first-order loss (venting, dilution):

    dC/dt = D d²C/dx² - λ C + q(t) δ(x)

whose response to a release is the convolution of the leak rate with the Green's function
G(x, s) = e^(-x²/(4Ds) - λs) / √(4πDs). The steady state of a constant leak is
C(x) = C0 e^(-x / L) with reach L = √(D/λ), so the scenario speaks of what it means on the
ground: the concentration `peak_lel` the leak would hold at its source, how far it reaches
(`reach_m`, path distance taken as straight-line distance) and how long it takes to settle
(`settle_min` = 1/λ). A sensor nearer the leak sees gas sooner and more of it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import special

from simulators.hydrology import STEP_S

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class GasLeakParams:
    start_min: float = 0.0  # when the leak begins, after the model starts
    ramp_min: float = 20.0  # from a hairline crack to the full leak rate
    leak_min: float | None = None  # how long it leaks before the valve is shut; None: to the end
    peak_lel: float = 80.0  # steady concentration at the source at the full rate, % LEL
    reach_m: float = 300.0
    settle_min: float = 15.0

    def __post_init__(self) -> None:
        problems = []
        if self.start_min < 0 or self.ramp_min < 0:
            problems.append("start_min and ramp_min must not be negative")
        if self.leak_min is not None and not self.leak_min > 0:
            problems.append("leak_min must be positive")
        if not (self.peak_lel > 0 and self.reach_m > 0 and self.settle_min > 0):
            problems.append("peak_lel, reach_m and settle_min must be positive")
        if problems:
            raise ValueError("invalid gas leak parameters: " + "; ".join(problems))


def leak_rate(p: GasLeakParams, minutes: FloatArray) -> FloatArray:
    """Leak rate relative to the full rate (0..1) at these minutes."""
    since = minutes - p.start_min
    ramp = np.clip(since / p.ramp_min, 0.0, 1.0) if p.ramp_min > 0 else (since >= 0).astype(np.float64)
    out: FloatArray = np.where(since >= 0, ramp, 0.0)
    if p.leak_min is not None:
        out = np.where(since > p.leak_min, 0.0, out)
    return out


def _released_until(x: FloatArray, t: FloatArray, diff: float, lam: float) -> FloatArray:
    """∫0^t G(x, s) ds in closed form: what a unit leak held from time 0 puts at x by t."""
    root = np.sqrt(diff * np.maximum(t, 1e-12))
    a = x / (2 * root)
    b = np.sqrt(lam * np.maximum(t, 0.0))
    reach = math.sqrt(diff / lam)
    near = np.exp(-x / reach) * special.erfc(a - b)
    far = np.exp(np.minimum(x / reach, 700.0)) * special.erfc(a + b)
    out: FloatArray = np.where(t > 0, (near - far) / (4 * math.sqrt(diff * lam)), 0.0)
    return out


def concentration(p: GasLeakParams, distance_m: FloatArray, n_steps: int) -> FloatArray:
    """% LEL added by the leak at each distance, at the end of every step: (steps, points)."""
    step_min = STEP_S / 60
    lam = 1.0 / p.settle_min  # per minute
    diff = p.reach_m**2 * lam  # m² per minute
    q = leak_rate(p, (np.arange(n_steps, dtype=np.float64) + 0.5) * step_min)  # each step's leak, as a rate
    # a constant unit leak settles at 1/(2√(Dλ)) at the source: scale so that reads peak_lel
    scale = p.peak_lel * 2 * math.sqrt(diff * lam)
    x = np.asarray(distance_m, np.float64)
    edges = np.arange(n_steps + 1, dtype=np.float64) * step_min
    # the kernel integrated exactly over each step: the source point has a singular kernel
    kernel = np.diff(_released_until(x[None, :], edges[:, None], diff, lam), axis=0)
    out = np.empty((n_steps, x.shape[0]))
    for j in range(x.shape[0]):
        out[:, j] = np.convolve(q, kernel[:, j])[:n_steps] * scale
    return out
