"""Run every stage's benchmark (bench/bench_*.py) with one command and collect their results in one JSON file.

Each benchmark runs in its own process, one after another (they measure the machine: never two at once), with
its own `--out FILE.json` where it has one; its printed output is kept too (bench_eval prints only). Two of
them measure cotgen against a peer outside it on the same inputs in the same run (PEERS: a bare
`vllm.LLM.generate` for generate, math-verify for filter); the others have no outside peer and compare
cotgen's own settings or say where the time goes (BASELINES). This script only runs them and gathers what they
wrote, with the peer or baseline each one measures against.

    flock /tmp/cotgen-heavy.lock .venv/bin/python bench/run_all.py --quick --out bench/results.json
    .venv/bin/python bench/run_all.py --only filter,eval            # the ones that load no model
    .venv/bin/python bench/run_all.py --list

`--quick` runs each with small sizes (a few minutes in all on the 2-core CPU); without it each runs with its
own defaults (the numbers the README quotes). Arguments after `--` go to every benchmark:
`--only train -- --steps 10`.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent

# small sizes for --quick; a benchmark missing here runs with its defaults
QUICK = {
    "distill": ["--train", "24", "--val", "8", "--compare", "0", "--steps", "3", "--eval-every", "3"],
    "eval": ["--problems", "300", "--k", "4"],
    "filter": ["--traces", "0"],
    "generate": ["--prompts", "4", "--n", "2", "--max-tokens", "32", "--skip-tunix"],
    "train": ["--steps", "3", "--max-len", "256",
              "--configs", "lora_packed,lora_unpacked,lora_unpacked_longest"],
    "rl": ["--steps", "2", "--max-tokens", "32"],
    "update_beside_vllm": ["--arms", "plain/4k,idle/4k", "--steps", "4"],
}


# the benchmarks with a peer outside cotgen, measured side by side in the same run
PEERS = {
    "generate": "bare vllm.LLM.generate on the same engine and requests (also cotgen's tunix backend at the "
                "same batch and dtype)",
    "filter": "math-verify alone on the same (completion, gold) pairs",
}
# the rest: no outside peer; what each compares instead
BASELINES = {
    "distill": "cotgen's own SFT vs online vs offline KD; vllm vs tunix as the top-k logits producer",
    "eval": "the seconds each scoring, metrics and compare step takes",
    "train": "cotgen's own settings: packed vs unpacked (padded to max_len and to the longest row), "
             "full vs LoRA vs QLoRA",
    "rl": "the split of each GRPO step's time (rollout, reference, rewards, update)",
    "update_beside_vllm": "the same training step alone, beside imported vllm and beside an idle engine; "
                          "4 KiB pages vs glibc's huge-page malloc",
}


def against(name: str) -> dict:
    return {"peer": PEERS.get(name), "baseline": None if name in PEERS else BASELINES.get(name, "none")}


def benches() -> dict[str, Path]:
    return {p.stem.removeprefix("bench_"): p for p in sorted(HERE.glob("bench_*.py"))}


def takes_out(path: Path) -> bool:
    return '"--out"' in path.read_text(encoding="utf-8")


def run_one(name: str, path: Path, args: list[str], timeout: float) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / f"{name}.json"
        cmd = [sys.executable, str(path), *args, *(["--out", str(out)] if takes_out(path) else [])]
        print(f"== {name}: {' '.join(cmd[1:])}", file=sys.stderr, flush=True)
        start = time.perf_counter()
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=HERE.parent, check=False)
            rc, stdout, stderr = proc.returncode, proc.stdout, proc.stderr
        except subprocess.TimeoutExpired as err:
            rc, stdout, stderr = "timeout", err.stdout or "", err.stderr or ""
            stdout = stdout.decode() if isinstance(stdout, bytes) else stdout
            stderr = stderr.decode() if isinstance(stderr, bytes) else stderr
        wall = round(time.perf_counter() - start, 1)
        result = json.loads(out.read_text()) if out.is_file() else None
    sys.stderr.write(stdout[-3000:])
    status = "ok" if rc == 0 else f"failed ({rc})"
    print(f"== {name}: {status} in {wall} s", file=sys.stderr, flush=True)
    return {"command": cmd[1:-2] if takes_out(path) else cmd[1:], "returncode": rc, "wall_s": wall,
            "result": result, "stdout": None if result is not None else stdout[-20000:],
            "stderr_tail": stderr[-4000:] if rc != 0 else None}


def main() -> None:
    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", default=None, help="comma list of benchmarks (default: all of bench/bench_*.py)")
    ap.add_argument("--quick", action="store_true", help="small sizes (see QUICK in this file)")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per benchmark")
    ap.add_argument("--out", type=Path, default=HERE / "results.json")
    ap.add_argument("--list", action="store_true", help="print the benchmarks and their --quick arguments")
    args = ap.parse_args(argv)
    found = benches()
    if args.list:
        for name, path in found.items():
            print(f"{name:<10} {path.relative_to(HERE.parent)}  quick: {' '.join(QUICK.get(name, [])) or '(defaults)'}")
            print(f"{'':<10} " + (f"peer: {PEERS[name]}" if name in PEERS
                                  else f"no outside peer; baseline: {BASELINES.get(name, 'none')}"))
        return
    names = args.only.split(",") if args.only else list(found)
    unknown = [n for n in names if n not in found]
    if unknown:
        sys.exit(f"unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(found)}")
    report = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "host": platform.node(),
              "machine": platform.machine(), "quick": args.quick, "benches": {}}
    for name in names:
        bench_args = (QUICK.get(name, []) if args.quick else []) + extra
        report["benches"][name] = {**against(name), **run_one(name, found[name], bench_args, args.timeout)}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")  # after each, so a crash keeps the rest
    print(f"{len(names)} benchmark(s) -> {args.out}")
    failed = [n for n, r in report["benches"].items() if r["returncode"] != 0]
    for n, r in report["benches"].items():
        print(f"  {n:<10} {'ok' if r['returncode'] == 0 else 'FAILED'}  {r['wall_s']:8.1f} s  "
              + (f"vs {r['peer']}" if r["peer"] else "no outside peer"))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
