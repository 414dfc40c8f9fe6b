"""The package's shape: importing it changes nothing in the process, the library never imports
its command line, and every mention of the mathematics points to docs/theory.md."""

import ast
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "centralpath"


def test_importing_the_package_and_sweep_leaves_the_environment_unchanged():
    # JAX sets a few variables of its own when imported: compare from after that.
    code = (
        "import os, jax; before = dict(os.environ); "
        "import centralpath, centralpath.sweep, centralpath.simulate; "
        "changed = {k for k in set(before) | set(os.environ) if before.get(k) != os.environ.get(k)}; "
        "print(sorted(changed))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def _imports(path: Path) -> set[str]:
    """Modules a file imports (relative imports resolved against its package)."""
    tree = ast.parse(path.read_text())
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            names.add(mod)
            names.update(f"{mod}.{a.name}" for a in node.names)
    return names


def test_the_library_never_imports_its_command_line():
    # centralpath/__main__.py is the program itself (`python -m centralpath`), run only as such.
    offenders = [
        str(path.relative_to(ROOT))
        for path in PACKAGE.rglob("*.py")
        if "cli" not in path.relative_to(PACKAGE).parts
        and path != PACKAGE / "__main__.py"
        and any(m == "centralpath.cli" or m.startswith("centralpath.cli.") for m in _imports(path))
    ]
    assert offenders == []


STALE = "THEORY" + ".md"  # the specification users never had (spelled so this file is not a hit)


def test_theory_is_cited_from_the_repository():
    assert (ROOT / "docs" / "theory.md").is_file()
    assert "docs/theory.md" in (ROOT / "README.md").read_text()
    stale = [
        str(p.relative_to(ROOT))
        for p in [*PACKAGE.rglob("*.py"), ROOT / "README.md", *(ROOT / "experiments").rglob("*.py")]
        if STALE in p.read_text()
    ]
    assert stale == []


def test_an_interrupt_while_the_program_starts_is_one_line_and_130(tmp_path):
    """Importing the package takes 1-2 s; the entry point (outside the package) turns a Ctrl-C or
    SIGTERM in that window into one line and status 130, not a traceback."""
    import signal
    import time

    # The dispositions of a program started from an interactive shell: a worker process running
    # this test may pass an ignored signal down (a background job's), and the launcher rightly
    # leaves an ignored signal ignored.
    code = (
        "import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
        "signal.signal(signal.SIGTERM, signal.SIG_DFL); "
        "import centralpath_launch; sys.exit(centralpath_launch.main())"
    )
    args = ["simulate", "--out", str(tmp_path / "run"), "--quiet", "--no-figures"]
    for sig in (signal.SIGINT, signal.SIGTERM):
        proc = subprocess.Popen(
            [sys.executable, "-c", code, *args], stderr=subprocess.PIPE, text=True, cwd=ROOT
        )
        time.sleep(0.3)  # well inside `import centralpath` (jax, equinox)
        proc.send_signal(sig)
        err = proc.communicate(timeout=60)[1]
        assert proc.returncode == 130, err
        lines = err.strip().splitlines()
        assert len(lines) == 1 and "interrupted" in lines[0] and "Traceback" not in err, err


def test_version_is_the_installed_distributions():
    from importlib.metadata import version

    import centralpath

    assert centralpath.__version__ == version("centralpath")


# The layering: core mathematics at the bottom, then dynamics, measurement, run infrastructure
# and the drivers, the command line on top. An arrow may only point down.
CORE = {
    "_stats", "_least_squares", "_loss", "_metrics", "_etf", "_ufm",
    "_eigen", "_linalg", "_errors", "_repr", "_quantities", "_float64",
}  # fmt: skip
DYNAMICS = {"flows", "_discrete", "_integrate", "_trajectory", "_series", "_solver"}


def _layer_of(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "centralpath" or len(parts) < 2:
        return None
    top = parts[1]
    if top in CORE:
        return "core"
    if top in DYNAMICS:
        return "dynamics"
    return {"measurement": "measurement", "_run": "run", "cli": "cli"}.get(top, "driver")


def test_dependencies_point_down():
    """The core never imports dynamics, measurement, run infrastructure, drivers or the command
    line; dynamics never imports measurement, drivers or the command line; measurement never
    imports the drivers (simulate, sweep, demo, networks, plotting) or the command line."""
    forbidden = {
        "core": {"dynamics", "measurement", "run", "driver", "cli"},
        "dynamics": {"measurement", "driver", "cli"},
        "measurement": {"driver", "cli"},
    }
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        layer = _layer_of(module)
        for imported in _imports(path):
            target = _layer_of(imported)
            if target in forbidden.get(layer, ()):
                offenders.append(f"{module} ({layer}) imports {imported} ({target})")
    assert offenders == [], "\n".join(sorted(set(offenders)))


def test_at_most_sixteen_private_modules_at_the_top():
    flat = sorted(p.name for p in PACKAGE.glob("_*.py") if not p.name.startswith("__"))
    assert len(flat) <= 16, flat


def test_python_m_centralpath_is_the_program(tmp_path):
    """`python -m centralpath` runs the command line: the output and status of the program,
    one line and status 2 for a mistake; importing the package does not load the command line
    (the package stays as light as it was)."""
    predict = ["predict", "--classes", "4", "--per-class", "10", "--omega0", "0.5,2"]
    predict += ["--times", "0,1e3", "--json", str(tmp_path / "m.json")]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    as_module = subprocess.run(
        [sys.executable, "-m", "centralpath", *predict], capture_output=True, text=True, env=env
    )
    assert as_module.returncode == 0, as_module.stderr
    from centralpath.cli import main

    assert main([*predict[:-1], str(tmp_path / "main.json")]) == 0
    assert (tmp_path / "m.json").read_text() == (tmp_path / "main.json").read_text()
    assert "omega_1" in as_module.stdout

    probe = (
        "import sys, runpy; import centralpath; "
        "assert 'centralpath.cli' not in sys.modules and 'centralpath.__main__' not in sys.modules; "
        "sys.argv = ['centralpath', 'predict', '--classes', '1', '--per-class', '10', "
        "'--omega0', '1', '--times', '0']; "
        "runpy.run_module('centralpath', run_name='__main__', alter_sys=True)"
    )
    bad = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env)
    assert bad.returncode == 2, bad.stderr
    lines = bad.stderr.strip().splitlines()
    assert len(lines) == 1 and "classes" in lines[0] and "Traceback" not in bad.stderr, bad.stderr


def test_the_torch_extra_bounds_pytorch_below_and_ci_pins_its_cpu_build():
    """Users keep the PyTorch they have (a lower bound, no pin); CI and the development set-up
    install one build, the CPU one, through the constraints file both name."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    (torch,) = project["optional-dependencies"]["torch"]
    assert torch.replace(" ", "").startswith("torch>=") and "==" not in torch and "<" not in torch
    pins = [
        line.split("#")[0].strip()
        for line in (ROOT / "constraints" / "torch-cpu.txt").read_text().splitlines()
        if line.split("#")[0].strip()
    ]
    assert len(pins) == 1 and pins[0].startswith("torch==") and pins[0].endswith("+cpu"), pins
    install = '".[test,torch]" -c constraints/torch-cpu.txt'
    assert install in (ROOT / ".ci" / "run").read_text()
    assert install in (ROOT / "README.md").read_text()
