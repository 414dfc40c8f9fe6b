"""Every test runs at float64 (docs/theory.md: identities hold to ~1e-12 only there)."""

from centralpath._runtime import configure_cpu_runtime

configure_cpu_runtime()  # before the JAX backend starts

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import hypothesis  # noqa: E402

hypothesis.settings.register_profile(
    "centralpath", deadline=None, max_examples=25, derandomize=True, print_blob=True
)
hypothesis.settings.load_profile("centralpath")
