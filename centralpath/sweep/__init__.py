"""Sweeps: many `simulate` configurations, batched into one compiled call per shape group.

A sweep file is a `simulate` configuration (keys of `simulate.DEFAULTS` at top level) plus a
`[sweep]` table of lists whose Cartesian product is run:

    flow = "ufm"
    classes = 4
    per_class = 10
    dim = 16
    methods = ["gd"]
    eta = 0.5
    t_end = 100.0

    [sweep]
    seeds = 100                  # a count: seed = base seed + 0, 1, …, 99 (or seed = [0, 7, …])
    lam_w = [1e-3, 5e-3]
    per_class = [10, 20]

Top-level sweep options: `precision` ("float64" default, or "float32"), `record` ("final":
metrics at t_end only, default; "all": at every save time) and `quantities` ("all" or a list
such as ["nc1", "objective", "snr", "etf_distance"]).

**Batching.** Configurations that agree on every key except the batchable ones (`seed`, `lam`,
`lam_w`, `lam_h`, `lam_b`, `mean_scale`, `noise_scale`, `eta`) form a *group* — in particular
they share their shapes (classes, per_class, dim, flow, representation) — and a group runs as
ONE compiled call (`batched_simulate`): the initial states are drawn under `vmap` over PRNG keys
with `simulate.build`, so the flows carry their ridges as batched leaves, and

- gradient descent is the `lax.scan` of `gradient_descent` run for every configuration; each
  keeps its own η (η = 0: `simulate.automatic_eta` at its own initial state) and its own step
  counts. The UFM's steps (matrix products only) are vectorised, in chunks whose states fit in
  L2; the flows whose steps solve for a least-squares classifier run one configuration at a
  time inside the compiled call, as do the initial states and the metrics (see "Deadlock");
- the renormalised flows (F3, F3′) use the closed form F(ω(t)) = F(ω(0)) + t, one vectorised
  Newton call; it *is* the exact solution of their ODE, so no ODE is integrated for them (their
  `ode` method is replaced by the `closed_form` series, which `simulate` also writes);
- the other flows integrate ONE vector ODE for the whole group, as `simulate` integrates one:
  segment by segment between the save times, with the same solver (the factored Tsit5 for the
  reduced UFM) and the same carried step-size controller, through the same solve
  (`centralpath._solver.solve`). The configurations are independent, so the batched vector
  field is separable; the controller's norm is the largest configuration's RMS norm, so every
  configuration's local error is held to rtol/atol, and a one-configuration sweep takes
  `simulate`'s steps. (Vmapping `diffeqsolve` instead would run every configuration in
  lock-step with the slowest one anyway, with a while loop per configuration.)

ODE, GD and closed-form results of a one-configuration sweep equal `simulate`'s to ~1e-12 at
float64; in a larger batch the ODE's shared steps agree with `simulate` to the tolerance
(`tests/test_sweep.py`).

**Deadlock.** jaxlib's batched LAPACK kernels (eigh, svd, LU, triangular solves under `vmap`)
split their batch over XLA:CPU's intra-op thread pool and block until it finishes; two of them
running concurrently can hold every thread of a small pool and wait forever (seen on 2 cores:
dtrsm and dsyevd both parked in `ParallelBatchMap`, 3 hangs in 5 runs). The compiled programs
here therefore never batch a LAPACK call (`_sequential`: `jax.custom_batching.sequential_vmap`),
and the command line turns XLA:CPU's concurrency-optimised scheduler off (`XLA_CPU_FLAGS`) before the
backend starts. Importing this package changes nothing in the process environment; library users
on CPU can call `centralpath.configure_cpu_runtime()` first thing, before any array exists.

**Devices.** The batch axis is split over devices with `jax.shard_map` on a 1-D `Mesh` with
axis "batch" (inputs placed with `NamedSharding(mesh, P("batch"))`); the batch is padded to a
multiple of the device count with copies of its first configuration, dropped from the results.
Each device runs its shard's loops independently, in chunks whose size depends on the batch,
not on the device count; the shared ODE steps are kept in step on every device by a `pmax` in
the error norm. Every number is the same bit for bit on any two device counts above one
(tested: 2 and 4 devices, GD and ODE, with XLA's default compile and with the command
line's quick one; and in the sharding benchmark at 256 and 64 configurations; LLVM at -O0
keeps no such equality). That needs care, because XLA rewrites arithmetic in ways that change the
last bits, differently in differently shaped programs: a loop over a shard of one
configuration is deleted and inlined. So the per-configuration work (GD's initial states, GD,
metrics, the ODE's vector field, snapshots and metrics) runs inside one chunk loop whose trip
count arrives as data (`_map_chunks`). One device is the exception XLA leaves: its program
is not partitioned (under Shardy `shard_map` inlines the body; under GSPMD it does not, and the
numbers differ the same way), and XLA compiles it differently in ways not pinned down here.
The GD states stay bitwise; the metrics and the ODE agree to rounding (measured: an ulp in
NC2's equiangularity, 2.6e-14 relative in the ODE of the central path; bitwise in the small
test sweeps). The flows and the least-squares classifier scale by a traced scalar as
(1/n)·(A B), not (A B)/n, which removed most of those differences: XLA reassociated the
division in one program and not in the other. On one CPU host,
`XLA_FLAGS=--xla_force_host_platform_device_count=4` (set before jax is imported) makes four
host devices.

Multi-host: start the same command on every host with `jax.distributed.initialize()` called
first (for example `python -c "import jax; jax.distributed.initialize(); from centralpath.cli
import main; raise SystemExit(main())" sweep cfg.toml --out runs/s`, so the exit status carries
through; or with the coordinator address, process
count and id given explicitly on clusters without auto-detection). `jax.devices()` then spans
all hosts, every process builds the same global inputs with `jax.make_array_from_callback`,
results are gathered with `multihost_utils.process_allgather`, and only process 0 writes files.

**Precision.** float64 is the default (the theory's identities hold to ~1e-12 only there).
`precision = "float32"` (or `--precision float32`) halves memory and is faster on
accelerators. Measured from the same initial states (experiments/bench_precision.py, simulate
defaults C = 4, N = 10, p = 8): the relative error of ω_j at t_end against float64 is ~2e-7 for
the closed form (t = 1e4) and for 14 GD steps of the renormalised flow, ~1e-4 for the worst ω_j
after 320 GD steps of the reduced UFM (NC1 there: ~2e-6); rounding grows with the step count
and with the conditioning of Σ_W. Once features collapse (NC1 below ~1e-6) float32 NC1 is
rounding noise. The metrics' pseudo-inverse cutoff is max(1e-10, 100·eps) (`metrics_rtol`):
at float32 the default 1e-10 keeps Σ_B's null space and NC1 comes out ~1e7. Use float64 for
anything compared at 1e-9 or tighter.

**Output** (`write_sweep`, `centralpath sweep`): a run directory with `config.toml` (the
resolved sweep file), `metadata.json` and one tidy table `results.csv` with a column per swept
key, then `time, quantity, index, value` (quantity = "<series>/<metric>", as `simulate`'s).
Groups are written to `groups/` atomically as they finish; `--resume DIR` skips finished groups
and gives the same final file as an uninterrupted run.

The package follows the sections above: `_spec` (the sweep file and its groups), `_devices`
(mesh, placement, gathering), `_program` (the compiled program of a group), `_batched`
(`batched_simulate`) and `_write` (tidy tables, run directory, resume).
"""

from ._batched import batched_simulate as batched_simulate, check_group as check_group
from ._devices import make_mesh as make_mesh
from ._program import group_program as group_program, metrics_rtol as metrics_rtol
from ._spec import (
    BATCHABLE as BATCHABLE,
    FLOAT_PARAMS as FLOAT_PARAMS,
    SweepSpec as SweepSpec,
    group_key as group_key,
    groups as groups,
    load_sweep as load_sweep,
    parse_sweep as parse_sweep,
)
from ._write import (
    cell as cell,
    csv_header as csv_header,
    group_csv as group_csv,
    read_results as read_results,
    run_sweep as run_sweep,
    write_sweep as write_sweep,
)
