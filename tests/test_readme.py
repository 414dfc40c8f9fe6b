"""The README's Python example runs and says what it claims: closed form = Diffrax."""

from pathlib import Path

import numpy as np
from numpy.testing import assert_allclose


def test_readme_python_example():
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    code = readme.split("### From Python", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 10)
    features = rng.normal(size=(40, 6)) + 2.0 * np.eye(4, 6)[labels]
    ns = dict(
        features=features,
        labels=labels,
        num_classes=4,
        per_class=10,
        W=rng.normal(size=(4, 6)),
        b=np.zeros(4),
    )
    exec(code, ns)
    d = ns["d"]
    assert_allclose(d.loss, d.nc1 + d.nc23 + d.perp, rtol=1e-12)
    assert_allclose(ns["traj"].metrics()["snr"], ns["omega_t"], rtol=1e-8)
