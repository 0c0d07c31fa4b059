"""Fast numeric verification as Polars expressions: no Python per row, no sympy.

Both the prediction and the gold go through `clean` (LaTeX wrappers), then `add_number`:

- dropped: `$`/`\\(`/`\\[` delimiters, a whole `\\boxed{}` or `\\text{}`, `\\!` `\\,` `{,}` spacing, currency
  (`$ \\$ € £ ¥`), degrees (`^\\circ`, `°`), a trailing `\\text{unit}`, trailing unit words ("18 dollars",
  "5cm", "42 km/h"; not math words such as "pi"; one letter only for m, g, s, L, h after a space: "20 m^2"),
  a leading `x =`, thousands separators (`1,000`, `1 000`, MATH's `1,\\!000`), a trailing period (`5.`),
  Unicode minus;
- understood: integers, decimals (`.5`, `0.50`), scientific notation (`1e6`, `1.5 \\times 10^{3}`), fractions
  (`3/4`, `\\frac{3}{4}`, `\\dfrac34`, `\\frac9{19}`, `-\\frac{3}{4}`, `\\frac{-3}{4}`) and a percent sign
  (`25%`, `25\\%`, "25 percent"), and a number word after a number ("1.5 million" = 1500000, "2 thousand";
  thousand to trillion, singular only: "1.5 millions" is not read as one);
- each value becomes an exact rational `num/den` (Int128; at most 17 digits each, else undecided), and an
  integer value (`1080`, `18.00`, `6.02e23`) also keeps its canonical digits, so integers of any length
  compare exactly.

Equal means equal rationals, cross-multiplied exactly (no float rounding: 0.3333333 is not 1/3). When either
side carries a percent sign, `p%` also equals `p` (a gold "25" for "what percent ...?") as well as `p/100`.
A row is decided here when both sides are numbers, or the gold is a number and there is no prediction;
everything else goes to the symbolic path (`verify.py`). The work is staged in temporary columns: each step
reads the previous column once, so the expression tree stays linear in size.
"""

from __future__ import annotations

import polars as pl

MAX_DIGITS = 17  # |num|, den < 10^17, so cross products with a percent factor stay inside Int128

UNIT_STOPWORDS = [
    "pi",
    "sqrt",
    "e",
    "i",
    "sin",
    "cos",
    "tan",
    "cot",
    "sec",
    "csc",
    "log",
    "ln",
    "exp",
    "mod",
    "inf",
    "infty",
    "infinity",
    "and",
    "or",
    "to",
    "times",
    "over",
    "x",
    "y",
    "z",
    "n",
    "k",
]

# A number word right after a number scales it ("1.5 million", "2 thousand"); plural forms are not numbers
SCALE_WORDS = {"thousand": 3, "million": 6, "billion": 9, "trillion": 12}
_SCALED = r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|[-+]?\.\d+"  # "1,500", "1.5", ".5"

_DECIMAL = (
    r"^(?<sign>[-+]?)(?<int>\d*)(?:\.(?<frac>\d*))?"
    r"(?:[eE](?<e1>[-+]?\d{1,3})|\s*(?:\\times|\\cdot|×|\*)\s*10\s*\^\s*\{?\s*(?<e2>[-+]?\d{1,3})\s*\}?)?$"
)
_FRAC_BRACED = r"^(?<sign>[-+]?)\s*\\[dt]?frac\s*\{\s*(?<a>[-+]?\d+)\s*\}\s*\{\s*(?<b>[-+]?\d+)\s*\}$"
_FRAC_SHORT = r"^(?<sign>[-+]?)\s*\\[dt]?frac(?<a>\d)(?<b>\d)$"  # \frac34
_FRAC_HALF1 = r"^(?<sign>[-+]?)\s*\\[dt]?frac(?<a>\d)\s*\{\s*(?<b>[-+]?\d+)\s*\}$"  # \frac9{19}
_FRAC_HALF2 = r"^(?<sign>[-+]?)\s*\\[dt]?frac\s*\{\s*(?<a>[-+]?\d+)\s*\}(?<b>\d)$"  # \frac{9}2
_SLASH = r"^(?<sign>)(?<a>[-+]?\d+)\s*/\s*(?<b>[-+]?\d+)$"
_FRACTIONS = (_FRAC_BRACED, _FRAC_SHORT, _FRAC_HALF1, _FRAC_HALF2, _SLASH)


def clean(e: pl.Expr) -> pl.Expr:
    """Light, meaning-preserving cleanup shared by the numeric and symbolic paths."""
    e = e.str.replace_all(r",\\!\s*", ",")  # MATH's thousands separator: 11,\! 111 -> 11,111
    e = e.str.replace_all(
        "\\\\", "\ue000", literal=True
    )  # protect the LaTeX row break `\\` from the next line
    e = e.str.replace_all(r"\\[!,;: ]|\\(?:displaystyle|left|right)\b", "").str.replace_all(
        "\ue000", "\\\\", literal=True
    )
    e = e.str.replace_all("−", "-", literal=True).str.replace_all("{,}", ",", literal=True).str.strip_chars()
    e = e.str.replace(r"^\$+(.*?)\$+$", "$1").str.replace(r"^\\[(\[](.*)\\[)\]]$", "$1").str.strip_chars()
    e = e.str.replace(r"^\\(?:boxed|fbox)\s*\{(.*)\}$", "$1").str.strip_chars()
    e = e.str.replace(r"^\\(?:text|textbf|mathrm|mbox)\s*\{([^{}]*)\}$", "$1").str.strip_chars()
    return e.str.replace(r"(\d)\s*\.$", "$1")


def _strip_units(df: pl.DataFrame | pl.LazyFrame, c: str) -> pl.DataFrame | pl.LazyFrame:
    """Column `c` with units, currency, `x =`, separators and a trailing period removed (staged columns:
    each step reads the previous column once, so the expression tree stays linear)."""
    col = pl.col(c)
    e = col.str.replace_all(r"\^\s*\{?\s*\\circ\s*\}?|°|\\circ", "")
    e = e.str.replace_all(r"\\\$|\$|€|£|¥", "").str.replace(r"^([-+]?)\s*(?:USD|US\$|Rs\.?)\s*", "$1")
    for _ in range(2):
        e = e.str.replace(r"\s*\\(?:text|textrm|mathrm|mbox)\s*\{[^{}]*\}\s*$", "")
    e = e.str.strip_chars()
    for word, exp in SCALE_WORDS.items():  # "1.5 million" -> "1.5e6" (before "million" reads as a unit)
        e = e.str.replace(rf"(?i)^({_SCALED})\s*{word}\b", f"${{1}}e{exp}")
    df = df.with_columns(e.alias(c))
    df = df.with_columns(
        col.str.extract(r"^.*?[\d}]\.?\s*([A-Za-z][A-Za-z ./]*(?:\^?[23]|²|³)?)$", 1).alias("_unit")
    )
    word = pl.col("_unit").str.replace_all(r"[ ./]|\^?[23]$|[²³]$", "").str.to_lowercase()
    metric = col.str.contains(
        r"\d\s+[mgsLh](?:\^?[23]|²|³)?$"
    )  # "20 m^2", "5 g": one-letter units after a space
    strip = pl.col("_unit").is_not_null() & (
        ((word.str.len_chars() >= 2) & ~word.is_in(UNIT_STOPWORDS)) | metric
    )
    df = df.with_columns(
        pl.when(strip)
        .then(col.str.head(col.str.len_chars() - pl.col("_unit").str.len_chars()))
        .otherwise(col)
        .str.strip_chars()
        .str.replace(r"^[A-Za-z]\w*\s*=\s*([^=]*)$", "$1")
        .alias(c)
    ).drop("_unit")
    sep = col.str.contains(r"^[-+]?\d{1,3}(?:[, ]\d{3})+(?:\.\d*)?(?:e\d{1,2})?$")
    df = df.with_columns(pl.when(sep).then(col.str.replace_all(r"[, ]", "")).otherwise(col).alias(c))
    return df.with_columns(col.str.replace(r"^([-+])\s+", "$1").str.replace(r"(\d)\.$", "$1").alias(c))


def _pow10(k: pl.Expr) -> pl.Expr:
    return pl.lit("1").str.pad_end(k + 1, "0").cast(pl.Int128)


PCT_RE = r"\s*(?:\\?%|percent)\s*$"


def add_number(df: pl.DataFrame | pl.LazyFrame, src: str, out: str) -> pl.DataFrame | pl.LazyFrame:
    """Add `{out}_num`, `{out}_den` (Int128, den > 0), `{out}_pct` (Boolean) and `{out}_int` (String) for the
    cleaned answers in column `src`. num is null when the text is not a number this path understands (or is
    too long); int holds a plain integer's canonical digits (any length)."""
    s, t = f"_{out}_s", f"_{out}_t"
    df = df.with_columns(
        pl.col(src).str.contains(PCT_RE).fill_null(False).alias(f"{out}_pct"),
        pl.col(src).str.replace(PCT_RE, "").alias(s),
    )
    df = _strip_units(df, s)
    df = df.with_columns(pl.col(s).str.extract_groups(_DECIMAL).alias(t))
    d = pl.col(t)
    df = df.with_columns(
        d.struct.field("sign").alias("_sign"),
        d.struct.field("int").alias("_int"),
        d.struct.field("frac").fill_null("").alias("_rawfrac"),
        d.struct.field("frac").fill_null("").str.strip_chars_end("0").alias("_frac"),
        pl.coalesce(d.struct.field("e1"), d.struct.field("e2"), pl.lit("0")).cast(pl.Int64).alias("_exp"),
    )
    df = df.with_columns(
        (pl.col("_int").fill_null("") + pl.col("_frac")).str.strip_chars_start("0").alias("_mant"),
        (pl.col("_exp") - pl.col("_frac").str.len_chars().cast(pl.Int64)).alias("_shift"),
    )
    is_dec = pl.col("_int").is_not_null() & ((pl.col("_int") + pl.col("_rawfrac")).str.len_chars() > 0)
    up, down = pl.col("_shift").clip(0), (-pl.col("_shift")).clip(0)
    ok = is_dec & (pl.col("_mant").str.len_chars() + up <= MAX_DIGITS) & (down <= MAX_DIGITS)
    sign = pl.when(pl.col("_sign") == "-").then(-1).otherwise(1).cast(pl.Int128)
    mant0 = pl.when(pl.col("_mant") == "").then(pl.lit("0")).otherwise(pl.col("_mant"))
    padded = mant0.str.pad_end(mant0.str.len_chars() + up, "0")  # the digits of an integer value
    minus = pl.when(pl.col("_sign") == "-").then(pl.lit("-")).otherwise(pl.lit(""))
    whole = is_dec & (pl.col("_shift") >= 0) & ~pl.col(f"{out}_pct")  # an integer, written in any form
    df = df.with_columns(
        pl.when(ok).then(sign * padded.cast(pl.Int128, strict=False)).alias("_dnum"),
        pl.when(ok).then(_pow10(down)).alias("_dden"),
        pl.when(whole)
        .then(pl.when(pl.col("_mant") == "").then(pl.lit("0")).otherwise(minus + padded))
        .alias(f"{out}_int"),
        *[pl.col(s).str.extract_groups(rx).alias(f"{t}{i}") for i, rx in enumerate(_FRACTIONS)],
    )
    a, b, fs = (
        pl.coalesce([pl.col(f"{t}{i}").struct.field(k) for i in range(len(_FRACTIONS))])
        for k in ("a", "b", "sign")
    )
    short = (a.str.replace(r"^[-+]", "").str.len_chars() <= MAX_DIGITS) & (
        b.str.replace(r"^[-+]", "").str.len_chars() <= MAX_DIGITS
    )
    df = df.with_columns(
        pl.when(short).then(a.cast(pl.Int128, strict=False)).alias("_a"),
        pl.when(short).then(b.cast(pl.Int128, strict=False)).alias("_b"),
        pl.when(fs == "-").then(-1).otherwise(1).cast(pl.Int128).alias("_fsign"),
    ).drop([f"{t}{i}" for i in range(len(_FRACTIONS))])
    bsign = pl.when(pl.col("_b") < 0).then(-1).otherwise(1).cast(pl.Int128)
    good = pl.col("_a").is_not_null() & pl.col("_b").is_not_null() & (pl.col("_b") != 0)
    df = df.with_columns(
        pl.coalesce(pl.col("_dnum"), pl.when(good).then(pl.col("_fsign") * pl.col("_a") * bsign)).alias(
            f"{out}_num"
        ),
        pl.coalesce(pl.col("_dden"), pl.when(good).then(pl.col("_b") * bsign)).alias(f"{out}_den"),
    )
    return df.drop(
        s,
        t,
        "_sign",
        "_int",
        "_rawfrac",
        "_frac",
        "_exp",
        "_mant",
        "_shift",
        "_dnum",
        "_dden",
        "_a",
        "_b",
        "_fsign",
    )


def add_numeric_verdict(df: pl.DataFrame | pl.LazyFrame, pred: str, gold: str) -> pl.DataFrame | pl.LazyFrame:
    """Add `num_decided` (Boolean) and `num_equal` (Boolean, null when undecided) for the cleaned answer
    columns `pred` and `gold`."""
    df = add_number(add_number(df, pred, "_p"), gold, "_g")
    pn, pd, pp, pi = (pl.col(f"_p_{k}") for k in ("num", "den", "pct", "int"))
    gn, gd, gp, gi = (pl.col(f"_g_{k}") for k in ("num", "den", "pct", "int"))
    hundred, one = pl.lit(100, pl.Int128), pl.lit(1, pl.Int128)
    eq_val = pn * gd * pl.when(gp).then(hundred).otherwise(one) == gn * pd * pl.when(pp).then(
        hundred
    ).otherwise(one)
    eq_raw = pn * gd == gn * pd
    both_int = pi.is_not_null() & gi.is_not_null()
    both_num = pn.is_not_null() & gn.is_not_null()
    gold_ok = gn.is_not_null() | gi.is_not_null()
    df = df.with_columns((both_int | both_num | (gold_ok & pl.col(pred).is_null())).alias("num_decided"))
    df = df.with_columns(
        pl.when(both_int)
        .then(pi == gi)
        .when(both_num)
        .then(eq_val | ((pp | gp) & eq_raw))
        .when(pl.col("num_decided"))
        .then(pl.lit(False))
        .alias("num_equal")
    )
    return df.drop([f"_{x}_{k}" for x in "pg" for k in ("num", "den", "pct", "int")])
