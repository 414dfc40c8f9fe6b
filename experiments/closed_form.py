"""Figure: ω_j(t) of the renormalised flow — closed form vs Diffrax vs gradient descent — with
the loss decomposition and NC metrics along the way.

    python experiments/closed_form.py [experiments/closed_form.toml]
"""

from __future__ import annotations

import sys

from _runner import enable_x64, parse_args, write_figures


def main(cfg: dict, out_root=None):
    from centralpath.simulate import simulate

    results = simulate(cfg["simulation"])
    return write_figures(cfg.get("name", "closed_form"), "simulate", results, cfg, out_root)


if __name__ == "__main__":
    enable_x64()
    print(main(*parse_args(__file__, sys.argv)))
