"""The run's report: base vs trained student on the held-out problems, with a paired confidence interval.

For each eval phase, `cotgen.eval.compare` pairs the base run (OUT/eval-base) and the final run (OUT/eval-final)
over their shared problems: B - A for every metric with a paired bootstrap 95% interval, and McNemar's exact
test on greedy correctness. The headline is greedy pass@1; the goal (default +10 points with an interval that
excludes zero) is met or not, and the report says which. Alongside: what each stage produced (traces kept,
SFT loss, RL rewards) and each stage's wall time. Files: OUT/report.md, OUT/report.json, OUT/report.png.

The ladder (`Plan.rungs`, when the run has a middle rung: rl after distill or SFT, or the SFT-only ablation):
each rung against the one below it on the same held-out problems (base -> distill -> rl), and the ablation as
SFT-only vs base and distill vs SFT-only; pass@1, format rate and truncation with their paired intervals, and
McNemar. OUT/ladder.png plots it.
"""

from __future__ import annotations

import json
from pathlib import Path

from cotgen.io import atomic_path, write_text
from cotgen.recipe.plan import Plan

HEADLINE = "greedy/pass@1"
LADDER_METRICS = (("greedy/pass@1", "pass@1"), ("greedy/faithful_rate", "faithful"),
                  ("greedy/format_rate", "format"), ("greedy/truncation_rate", "truncated"))
WORK_LINES = (  # the arithmetic of the reasoning (cotgen/verify/steps.py), beside the headline
    ("greedy/faithful_rate", "Faithful work (right answer, a right arithmetic step and no wrong one)"),
    ("greedy/wrong_step_rate", "Answers whose reasoning has a false arithmetic step"),
)


def _read_json(path: Path) -> dict | None:
    """A stage's own summary file; None where it is absent or unreadable (the report shows what there is)."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # ValueError: not UTF-8 (UnicodeDecodeError) or not JSON (JSONDecodeError)
        return None
    return doc if isinstance(doc, dict) else None


def compare_phases(plan: Plan) -> list[dict]:
    from cotgen.eval import compare as cmp

    out = []
    for base, final in plan.comparisons():
        c = cmp.compare(base.folder, final.folder)
        head = next((r for r in c.rows if r["metric"] == HEADLINE), None)
        protos = {who: cmp.read_protocol(s.folder / "metrics.json")
                  for who, s in (("base", base), ("final", final))}
        out.append({"phase": base.phase, "base": str(base.folder), "final": str(final.folder),
                    "comparison": json.loads(cmp.to_json(c)), "markdown": cmp.render(c), "headline": head,
                    "prompts": {who: {k: p.get(k) for k in ("model", "prompt_style", "prompt_template", "shots_k",
                                                            "max_tokens", "problems")}
                                for who, p in protos.items()}})
    return out


def ladder(plan: Plan) -> list[dict]:
    """Rung-by-rung comparisons (see the module doc); [] without middle rungs or where an eval is missing."""
    from cotgen.eval import compare as cmp

    rungs = plan.rungs()
    if not rungs:
        return []
    main = [r for r in rungs if r[0] != "sft-only"]
    pairs = list(zip(main, main[1:]))
    only = dict(rungs).get("sft-only")
    if only is not None:
        pairs += [(main[0], ("sft-only", only)), (("sft-only", only), main[1])]
    out = []
    for (la, a), (lb, b) in pairs:
        if not ((a.folder / "samples.parquet").is_file() and (b.folder / "samples.parquet").is_file()):
            continue
        c = cmp.compare(a.folder, b.folder)
        rows = {r["metric"]: r for r in c.rows}
        m = c.mcnemar
        out.append({"from": la, "to": lb, "shared": c.shared,
                    "metrics": {name: {k: rows[metric][k] for k in ("a", "b", "diff", "lo", "hi")}
                                for metric, name in LADDER_METRICS if metric in rows},
                    "mcnemar": dict(m) if m else None})
    return out


def ladder_markdown(steps: list[dict], rungs: list[tuple[str, object]]) -> list[str]:
    if not steps:
        return []
    lines = ["## The ladder, rung by rung", "",
             "Each rung against the one before it on the same held-out problems (paired bootstrap 95% CI, McNemar's "
             "exact test on greedy correctness): " + " -> ".join(f"`{r[0]}`" for r in rungs if r[0] != "sft-only")
             + (", and the ablation `sft-only` (the same data, steps and seed without the teacher) against `base` and "
                "the distilled student" if any(r[0] == "sft-only" for r in rungs) else "") + ".", "",
             "| rung | pass@1 | change (points) | 95% CI | faithful work (change, 95% CI) | format | truncated | "
             "McNemar (a only / b only, p) |",
             "|---|---:|---:|---|---|---:|---:|---|"]
    for st in steps:
        p, w, f, t = (st["metrics"].get(k, {}) for k in ("pass@1", "faithful", "format", "truncated"))
        m = st["mcnemar"]
        work = (f"{100 * w['a']:.1f}% -> {100 * w['b']:.1f}% ({100 * w['diff']:+.1f}, "
                f"[{100 * w['lo']:+.1f}, {100 * w['hi']:+.1f}])" if w else "")
        lines.append(f"| {st['from']} -> **{st['to']}** | {100 * p['a']:.1f}% -> {100 * p['b']:.1f}% | "
                     f"{100 * p['diff']:+.1f} | [{100 * p['lo']:+.1f}, {100 * p['hi']:+.1f}] | {work} | "
                     f"{100 * f['a']:.1f}% -> {100 * f['b']:.1f}% | {100 * t['a']:.1f}% -> {100 * t['b']:.1f}% | "
                     + (f"{m['a_only']} / {m['b_only']}, p = {m['p_value']:.3g}" if m else "") + " |")
    return lines + ["", "![the ladder](ladder.png)", ""]


def plot_ladder(steps: list[dict], path: Path) -> None:
    """Pass@1 of every rung with the paired 95% CI of its change from the rung below it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    main = [st for st in steps if "sft-only" not in (st["from"], st["to"])]
    if not main:
        return
    chain = [(main[0]["from"], 100 * main[0]["metrics"]["pass@1"]["a"], None)]
    chain += [(st["to"], 100 * st["metrics"]["pass@1"]["b"], st) for st in main]
    only = next((st for st in steps if st["to"] == "sft-only"), None)
    fig, ax = plt.subplots(figsize=(6.5, 3.8), dpi=120)
    x = list(range(len(chain)))
    ax.plot(x, [c[1] for c in chain], "-o", color="#3b75af")
    for i, (label, y, st) in enumerate(chain):
        if st is not None:
            p = st["metrics"]["pass@1"]
            ax.annotate(f"{100 * p['diff']:+.1f} [{100 * p['lo']:+.1f}, {100 * p['hi']:+.1f}]", (i, y),
                        textcoords="offset points", xytext=(0, 8), ha="center", fontsize=8)
    if only is not None:  # beside the rung trained on the same data with the teacher
        p = only["metrics"]["pass@1"]
        ax.plot([1.15], [100 * p["b"]], "s", color="#999999", label="sft-only (same data, steps, seed)")
        ax.annotate(f"{100 * p['diff']:+.1f} vs base", (1.15, 100 * p["b"]), textcoords="offset points",
                    xytext=(0, -14), ha="center", fontsize=8, color="#666666")
        ax.legend(loc="lower right", fontsize=8)
    ax.set_xticks(x, [c[0] for c in chain])
    ax.set_ylabel("greedy pass@1 (%)")
    ax.set_title("the ladder: each rung vs the one before it (95% CI)")
    ax.set_ylim(0, 100)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def goal(headline: dict | None, points: float) -> dict:
    if headline is None:
        return {"points": points, "met": False, "why": "no greedy pass@1 in both runs"}
    gain = 100 * headline["diff"]
    met = gain >= points and headline["lo"] > 0
    why = (f">= +{points:g} points with the 95% CI above zero: " + ("met" if met else "not met")
           + f" ({gain:+.1f} points, CI [{100 * headline['lo']:+.1f}, {100 * headline['hi']:+.1f}])")
    return {"points": points, "gain_points": round(gain, 2), "ci_points": [round(100 * headline["lo"], 2),
            round(100 * headline["hi"], 2)], "met": met, "why": why}


def stage_facts(plan: Plan) -> dict:
    """A few numbers from each stage's own outputs, where present."""
    facts = {}
    for s in plan.stages:
        if s.command == "generate":
            m = _read_json(s.folder / "manifest.json")
            if m:
                facts[s.name] = {"samples": m["counts"]["finished"], "problems": m["problems"]["count"],
                                 "completion_tokens_per_s": m["throughput"].get("completion_tokens_per_s")}
        elif s.command == "filter":
            st = _read_json(s.folder / "stats.json")
            if st:
                facts[s.name] = {"funnel": st.get("funnel"), "train_rows": st["outputs"].get("train_rows"),
                                 "validation_rows": st["outputs"].get("validation_rows")}
        elif s.command in ("train", "rl", "distill train"):
            st = _read_json(s.folder / "run.json")
            if st:
                keys = ("status", "method", "final_step", "first_loss", "last_loss", "last_eval_loss", "first",
                        "last", "first_eval", "last_eval", "step_time_s", "wall_s")
                facts[s.name] = {k: st[k] for k in keys if k in st}
    return facts


def markdown(plan: Plan, phases: list[dict], goals: list[dict], facts: dict, times: list[dict],
             steps: list[dict] | None = None) -> str:
    lines = [f"# cotgen run: {plan.name}", "", f"- recipe: `{plan.recipe}` (copy: `{plan.out}/recipe/recipe.toml`)",
             f"- run folder: `{plan.out}`", ""]
    if plan.smoke is not None:
        lines += ["**Smoke run** (`cotgen run --smoke`): the recipe's stage graph on tiny random models with a few "
                  "problems and steps; it shows that every stage runs and connects, and its numbers say nothing "
                  f"about the recipe. Changes ({plan.out}/recipe/smoke.json):", "",
                  *[f"- {change}" for change in plan.smoke], ""]
    for ph, g in zip(phases, goals):
        title = "held-out set" + (f" {ph['phase']}" if ph["phase"] else "")
        h = ph["headline"]
        lines += [f"## Base vs trained student, {title}", ""]
        if h:
            n = ph["comparison"]["shared"]
            lines += [(f"**Greedy pass@1 on {n} held-out problems: base {100 * h['a']:.1f}% -> trained "
                       f"{100 * h['b']:.1f}% ({100 * h['diff']:+.1f} points, paired bootstrap 95% CI "
                       f"[{100 * h['lo']:+.1f}, {100 * h['hi']:+.1f}]).** Goal: {g['why']}."), ""]
            m = ph["comparison"].get("mcnemar")
            if m:
                lines += [(f"McNemar exact test: base alone right on {m['a_only']}, trained alone on "
                           f"{m['b_only']}, p = {m['p_value']:.3g}."), ""]
            rows = {r["metric"]: r for r in ph["comparison"]["rows"]}
            for metric, label in WORK_LINES:
                if metric in rows:
                    r = rows[metric]
                    lines += [(f"{label}: base {100 * r['a']:.1f}% -> trained {100 * r['b']:.1f}% "
                               f"({100 * r['diff']:+.1f} points, CI [{100 * r['lo']:+.1f}, {100 * r['hi']:+.1f}])."),
                              ""]
        pb, pf = ph["prompts"]["base"], ph["prompts"]["final"]
        lines += [("Each model is asked the way it answers best: the base model with "
                   f"`{pb.get('prompt_style')}` prompts ({pb.get('prompt_template')}), the trained student with "
                   f"`{pf.get('prompt_style')}` prompts ({pf.get('prompt_template')}); both greedy, at most "
                   f"{pf.get('max_tokens')} new tokens, the same extractor and verifier."), "",
                  "<details><summary>every metric</summary>", "", ph["markdown"], "</details>", ""]
    lines += ladder_markdown(steps or [], plan.rungs())
    if facts:
        lines += ["## Stages", ""]
        for name, f in facts.items():
            lines.append(f"- **{name}**: " + ", ".join(f"{k} {_fmt(v)}" for k, v in f.items() if v is not None))
        lines.append("")
    if times:
        lines += ["## Wall time", "", "| stage | status | last run (s) | all runs (s) |", "|---|---|---:|---:|"]
        lines += [f"| {t['stage']} | {t['status']} | {_fmt(t['wall_s'])} | {_fmt(t['wall_s_total'])} |" for t in times]
        total = sum(t["wall_s_total"] or 0 for t in times)
        lines += [f"| total | | | {total:.0f} |", ""]
    lines += ["![base vs trained](report.png)", ""]
    return "\n".join(lines)


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}: {_fmt(x)}" for k, x in v.items()) + "}"
    return str(v)


def plot(phases: list[dict], path: Path, goal_points: float | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [p for p in phases if p["headline"]]
    if not shown:
        return
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), dpi=120)
    labels = [p["phase"] or "held-out" for p in shown]
    x = range(len(shown))
    a = [100 * p["headline"]["a"] for p in shown]
    b = [100 * p["headline"]["b"] for p in shown]
    axes[0].bar([i - 0.2 for i in x], a, 0.4, label="base", color="#999999")
    axes[0].bar([i + 0.2 for i in x], b, 0.4, label="trained", color="#3b75af")
    axes[0].set_xticks(list(x), labels)
    axes[0].set_ylabel("greedy pass@1 (%)")
    axes[0].legend()
    axes[0].set_title("accuracy")
    d = [100 * p["headline"]["diff"] for p in shown]
    lo = [100 * p["headline"]["lo"] for p in shown]
    hi = [100 * p["headline"]["hi"] for p in shown]
    axes[1].errorbar(list(x), d, yerr=[[di - low for di, low in zip(d, lo)], [h - di for di, h in zip(d, hi)]],
                     fmt="o", capsize=6, color="#3b75af")
    axes[1].axhline(0, color="black", lw=0.8)
    if goal_points:
        axes[1].axhline(goal_points, color="#c0504d", lw=0.8, ls="--", label=f"goal +{goal_points:g}")
        axes[1].legend()
    axes[1].set_xticks(list(x), labels)
    axes[1].set_ylabel("trained - base (points)")
    axes[1].set_title("paired difference, 95% bootstrap CI")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def write(plan: Plan, times: list[dict]) -> str:
    phases = compare_phases(plan)
    goals = [goal(p["headline"], plan.goal_points) for p in phases]
    facts = stage_facts(plan)
    steps = ladder(plan)
    doc = {"recipe": str(plan.recipe), "out": str(plan.out),
           "phases": [{k: v for k, v in p.items() if k != "markdown"} | {"goal": g} for p, g in zip(phases, goals)],
           "ladder": steps, "stages": facts, "timings": times}
    write_text(plan.out / "report.json", json.dumps(doc, indent=2, default=str) + "\n")
    plot(phases, plan.out / "report.png", plan.goal_points)
    plot_ladder(steps, plan.out / "ladder.png")
    write_text(plan.out / "report.md", markdown(plan, phases, goals, facts, times, steps))
    return str(plan.out / "report.md")
