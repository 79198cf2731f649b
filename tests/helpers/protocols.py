"""The released NYUv2 numbers the protocol tests compare with (tests/unit/test_protocols.py, tests/e2e/test_protocols_search.py)."""

import numpy as np

# CAGrad's single-task NYUv2 numbers in the released code's order (nash-mtl experiments/nyuv2/utils.py),
# and its SIGN: 1 where higher is better.
NYU_ORDER = [
    ("segmentation", "miou"),
    ("segmentation", "pixacc"),
    ("depth", "abs_err"),
    ("depth", "rel_err"),
    ("normal", "mean"),
    ("normal", "median"),
    ("normal", "within_11_25"),
    ("normal", "within_22_5"),
    ("normal", "within_30"),
]
NYU_BASE = np.array([0.3830, 0.6376, 0.6754, 0.2780, 25.01, 19.21, 0.3014, 0.5720, 0.6915])
NYU_SIGN = np.array([1, 1, 0, 0, 0, 0, 1, 1, 1])
