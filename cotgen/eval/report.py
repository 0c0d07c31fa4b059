"""The eval report folder, every file written atomically:

    metrics.json      {"metrics": flat namespaced metrics, "breakdown": {level: [...], subject: [...]},
                       "protocol": what was run (see `cotgen.eval.run.protocol`), "timings": ...}
    samples.parquet   every sample (eval.records.SAMPLE_SCHEMA): completion, extracted answer, method, verdict
    problems.parquet  one row per problem (eval.metrics.per_problem) with its question
    summary.md        headline metrics, breakdowns, the pinned protocol with a rendered prompt, the plots
    pass_at_k.png     pass@k and maj@k against k (greedy pass@1 as a line), y axis zoomed to the data
    lengths.png       completion length histogram per pass as shares of its samples (max_tokens marked)
    config.toml       the resolved EvalConfig (`cotgen eval --config config.toml` repeats the run)
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import polars as pl

from cotgen.io import atomic_path, write_parquet, write_text

FILES = ("metrics.json", "samples.parquet", "problems.parquet", "summary.md", "pass_at_k.png", "lengths.png",
         "config.toml")


def write(out: str | Path, samples: pl.DataFrame, problems: pl.DataFrame, summary: dict, breakdowns: dict,
          protocol: dict, timings: dict) -> Path:
    out = Path(out)
    write_parquet(samples, out / "samples.parquet")
    write_parquet(problems, out / "problems.parquet")
    doc = {"metrics": summary, "breakdown": {k: v.to_dicts() for k, v in breakdowns.items()},
           "protocol": protocol, "timings": timings}
    write_text(out / "metrics.json", json.dumps(_finite(doc), indent=2, ensure_ascii=False) + "\n")
    plot_pass_at_k(summary, out / "pass_at_k.png")
    plot_lengths(samples, protocol.get("max_tokens"), out / "lengths.png")
    write_text(out / "summary.md", markdown(summary, breakdowns, protocol, timings))
    return out


def _finite(x):
    """NaN is not JSON: write null."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_finite(v) for v in x]
    return x


def curve(summary: dict, kind: str) -> list[tuple[int, float]]:
    """[(k, value)] of `sampled/{kind}@k`, by k."""
    prefix = f"sampled/{kind}@"
    return sorted((int(key[len(prefix):]), v) for key, v in summary.items() if key.startswith(prefix))


def plot_pass_at_k(summary: dict, path: Path) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.8), dpi=120)
    values = [v for kind in ("pass", "maj") for _, v in curve(summary, kind)] + [summary.get("greedy/pass@1", 0)]
    top = max([v for v in values if math.isfinite(v)] or [0])
    for kind, marker in (("pass", "o"), ("maj", "s")):
        points = curve(summary, kind)
        if points:
            ax.plot(*zip(*points), marker=marker, label=f"{kind}@k")
    if "greedy/pass@1" in summary:
        ax.axhline(summary["greedy/pass@1"], color="grey", linestyle="--", label="greedy pass@1")
    ks = [k for k, _ in curve(summary, "pass")] or [1]
    ax.set_xscale("log", base=2)
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.set_xlim(0.8, max(ks) * 1.25)
    ax.set_ylim(0, min(1.0, top * 1.25 + 0.02))  # zoomed to the data: small models score near 0
    ax.set_xlabel("k (samples per problem)")
    ax.set_ylabel("accuracy")
    ax.set_title(f"accuracy against k ({summary.get('problems', 0)} problems)")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    _save(fig, path)


def plot_lengths(samples: pl.DataFrame, max_tokens: int | None, path: Path) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.8), dpi=120)
    top = max(int(samples["completion_tokens"].max() or 0), max_tokens or 0, 1)
    bins = min(50, top)
    for name in ("greedy", "sampled"):
        lengths = samples.filter(pl.col("pass") == name)["completion_tokens"].to_numpy()
        if len(lengths):
            weights = [1 / len(lengths)] * len(lengths)  # shares, so passes of different sizes compare
            ax.hist(lengths, bins=bins, range=(0, top), weights=weights, alpha=0.6,
                    label=f"{name} ({len(lengths)} samples)")
    if max_tokens:
        ax.axvline(max_tokens, color="red", linestyle=":", label=f"max_tokens {max_tokens}")
    ax.set_xlabel("completion tokens")
    ax.set_ylabel("share of samples")
    ax.set_title("completion length")
    ax.legend(loc="best", fontsize=8)
    _save(fig, path)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", bbox_inches="tight")
    fig.clf()
    _pyplot().close(fig)


# ---- Markdown -----------------------------------------------------------------------------------------------


def markdown(summary: dict, breakdowns: dict, protocol: dict, timings: dict) -> str:
    p = protocol
    kind = "base model" if p.get("prompt_style") == "few_shot" else "chat/student model"
    lines = [f"# Eval: {p['model']} on {p['source']}/{p['split']}", "",
             (f"{summary.get('problems', 0)} problems; {kind}, {p['prompt_style']} prompt; "
              f"backend {p['backend']}."),
             "", "| metric | value |", "|---|---:|"]
    lines += [f"| {key} | {_fmt(value)} |" for key, value in summary.items() if key != "problems"]
    for by, table in breakdowns.items():
        if table.height:
            lines += ["", f"## By {by}", "", _table(table)]
    lines += ["", "## Plots", "", "![accuracy against k](pass_at_k.png)", "",
              "![completion lengths](lengths.png)"]
    lines += ["", "## Protocol", ""]
    for key, value in p.items():
        if key == "prompt_example":
            continue
        lines.append(f"- **{key}**: {_protocol_value(value)}")
    lines += ["", "Rendered prompt of the first problem:", "", "````text", p.get("prompt_example", ""), "````"]
    if timings:
        lines += ["", "## Timings", ""] + [f"- {k}: {_fmt(v)}" for k, v in timings.items()]
    return "\n".join(lines) + "\n"


def _table(df: pl.DataFrame) -> str:
    head = "| " + " | ".join(df.columns) + " |"
    rule = "|" + "|".join("---" if i == 0 else "---:" for i in range(df.width)) + "|"
    rows = ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in df.iter_rows()]
    return "\n".join([head, rule, *rows])


def _fmt(value) -> str:
    if isinstance(value, float):
        return "n/a" if not math.isfinite(value) else f"{value:.4f}".rstrip("0").rstrip(".") if value else "0"
    return str(value)


def _protocol_value(value) -> str:
    if isinstance(value, (dict, list, tuple)):
        return "`" + json.dumps(value, ensure_ascii=False) + "`"
    return f"`{value}`"
