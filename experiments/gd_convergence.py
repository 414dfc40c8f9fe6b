"""Figure: gradient descent converges to the renormalised flow at first order in η.

python experiments/gd_convergence.py [experiments/gd_convergence.toml]
"""

from __future__ import annotations

import sys

from _runner import enable_x64, parse_args, write_figures


def main(cfg: dict, out_root=None):
    import numpy as np

    from centralpath.demo import gd_convergence
    from centralpath.simulate import DEFAULTS

    sim = {**DEFAULTS, **cfg["simulation"]}
    results = gd_convergence(sim, float(cfg["t"]), [float(e) for e in cfg["etas"]])
    # The time the errors are measured at, so that the figure (drawn from results only) says it.
    results["convergence/t"] = np.asarray(float(cfg["t"]))
    return write_figures(cfg.get("name", "gd_convergence"), "convergence", results, cfg, out_root)


if __name__ == "__main__":
    enable_x64()
    print(main(*parse_args(__file__, sys.argv)))
