"""Figure: UFM gradient descent with weight decay reaches the global minimum
(C−1)τ(1 − Cτ/2), τ = √(Nλ_Wλ_H), and neural collapse (docs/theory.md §6 F1).

    python experiments/ufm_collapse.py [experiments/ufm_collapse.toml]
"""

from __future__ import annotations

import sys

from _runner import enable_x64, parse_args, write_figures


def main(cfg: dict, out_root=None):
    import numpy as np

    from centralpath import ufm_global_minimum
    from centralpath.simulate import simulate

    sim = cfg["simulation"]
    results = simulate(sim)
    optimum = float(
        ufm_global_minimum(sim["classes"], sim["per_class"], sim["lam_w"], sim["lam_h"])
    )
    results["oracle/global_minimum"] = np.asarray(optimum)
    results["oracle/gap_final"] = np.asarray(results["gd/objective"][-1] - optimum)
    return write_figures(cfg.get("name", "ufm_collapse"), "simulate", results, cfg, out_root)


if __name__ == "__main__":
    enable_x64()
    print(main(*parse_args(__file__, sys.argv)))
