"""Core of the early-warning system: configuration, registries, shared models, storage, CLI."""

import os

__version__ = "0.1.0"

# Nothing here makes BLAS calls worth a thread pool (the arrays are small, the detectors
# closed-form), yet each OpenBLAS that numpy and scipy load starts a thread a core that spins
# for about 0.1 s before it sleeps: about 0.25 s of CPU a process start, taken from InfluxDB
# on a shared host. Set before numpy is first imported (the `ews` command imports this package
# before anything else); an operator's own setting wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
