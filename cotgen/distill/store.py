"""The stored top-k format: a teacher's k most likely next tokens at every position, in safetensors shards.

A logits folder holds `manifest.json`, `config.toml` and `shard-NNNNN.safetensors` files, each covering
`shard_examples` consecutive examples (in `cotgen.train.data.tokenize` order) with four tensors:

    tokens        int32   (N,)       the examples' token ids, concatenated (<bos> prompt completion <eot>)
    offsets       int64   (E + 1,)   example j is tokens[offsets[j]:offsets[j+1]]
    top_ids       int32   (N - E, k) for example j, row r (r = 0 .. n_j - 2) is the teacher's distribution of
    top_logprobs  float16 (N - E, k)  token r + 1 given tokens 0..r: ids most likely first, log-probabilities
                                     under the full (shared) vocabulary; example j's rows start at
                                     offsets[j] - j

so a token costs 6k + 4 bytes (k = 64: 388 B; k = 256: 1,540 B). The last position of an example (after its
end-of-turn) predicts nothing the student is trained on and is not stored. The manifest records the teacher,
k, the vocabulary (after the 262,208 -> 262,144 slice), the tokenizer's hash, the data's fingerprint and
`max_len`, so training refuses logits made for other data or another tokenizer. Shards are written atomically
and a re-run continues after the last complete shard. Reading memory-maps the shards (safetensors' layout is
an 8-byte header length, a JSON header, then raw little-endian arrays), so only the rows a batch needs are
read.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from cotgen.errors import CotgenError

FORMAT = "cotgen-topk/1"
MANIFEST = "manifest.json"
_DTYPES = {"I32": np.int32, "I64": np.int64, "F16": np.float16, "F32": np.float32}


def shard_name(index: int) -> str:
    return f"shard-{index:05d}.safetensors"


def write_shard(path: Path, sequences: list[np.ndarray], top_ids: list[np.ndarray],
                top_logprobs: list[np.ndarray]) -> int:
    """One shard from per-example arrays: ids (n,), top ids (n-1, k), logprobs (n-1, k). Returns its bytes."""
    from safetensors.numpy import save_file

    from cotgen.io import atomic_path

    lengths = np.array([len(s) for s in sequences], dtype=np.int64)
    for seq, ids, lps in zip(sequences, top_ids, top_logprobs):
        if ids.shape[0] != len(seq) - 1 or lps.shape != ids.shape:
            raise ValueError(f"an example of {len(seq)} tokens needs {len(seq) - 1} top-k rows, "
                             f"got {ids.shape}")
    tensors = {
        "tokens": np.concatenate(sequences).astype(np.int32),
        "offsets": np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
        "top_ids": np.ascontiguousarray(np.concatenate(top_ids).astype(np.int32)),
        "top_logprobs": np.ascontiguousarray(np.concatenate(top_logprobs).astype(np.float16)),
    }
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp))
    return Path(path).stat().st_size


def _memmap(path: Path) -> dict[str, np.ndarray]:
    """Memory-mapped tensors of a safetensors file (no copy)."""
    with open(path, "rb") as f:
        size = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(size))
    raw = np.memmap(path, dtype=np.uint8, mode="r")
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        out[name] = raw[8 + size + begin:8 + size + end].view(_DTYPES[info["dtype"]]).reshape(info["shape"])
    return out


def read_manifest(folder: Path) -> dict:
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise CotgenError(f"{folder} holds no finished `cotgen distill logits` output (no {MANIFEST})")
    manifest = json.loads(path.read_text(encoding="utf-8"))
    if manifest.get("format") != FORMAT:
        raise CotgenError(f"{path}: format {manifest.get('format')!r}, expected {FORMAT}")
    return manifest


class TopK:
    """A logits folder, memory-mapped: `example(i)` -> tokens (n,), top ids (n-1, k), logprobs (n-1, k)."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.manifest = read_manifest(self.folder)
        self.k = self.manifest["top_k"]
        self._shards = [(s["first"], s["count"], self.folder / s["file"]) for s in self.manifest["shards"]]
        self._open: dict[int, dict[str, np.ndarray]] = {}
        self.size = sum(count for _, count, _ in self._shards)

    def __len__(self) -> int:
        return self.size

    def _shard(self, i: int) -> tuple[dict[str, np.ndarray], int]:
        s = min(i // self.manifest["shard_examples"], len(self._shards) - 1)
        first, count, path = self._shards[s]
        if not first <= i < first + count:
            raise IndexError(i)
        if s not in self._open:
            if not path.is_file():
                raise CotgenError(f"{path} is missing: the logits folder is incomplete")
            self._open[s] = _memmap(path)
        return self._open[s], i - first

    def tokens(self, i: int) -> np.ndarray:
        t, j = self._shard(i)
        return t["tokens"][t["offsets"][j]:t["offsets"][j + 1]]

    def example(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        t, j = self._shard(i)
        a, b = int(t["offsets"][j]), int(t["offsets"][j + 1])
        return t["tokens"][a:b], t["top_ids"][a - j:b - j - 1], t["top_logprobs"][a - j:b - j - 1]


def batch_topk(rows: list[list[int]], lengths: np.ndarray, store: TopK, batch_size: int,
               max_len: int) -> dict[str, np.ndarray]:
    """Teacher top-k for a batch laid out like `cotgen.train.data.make_batch`: (B, L, k) ids and logprobs,
    position t holding the distribution of token t + 1 (zeros where nothing is stored)."""
    k = store.k
    ids = np.zeros((batch_size, max_len, k), dtype=np.int32)
    lps = np.zeros((batch_size, max_len, k), dtype=np.float16)
    for r, row in enumerate(rows):
        off = 0
        for i in row:
            n = int(lengths[i])
            _, top, lp = store.example(i)
            ids[r, off:off + n - 1] = top[:n - 1]
            lps[r, off:off + n - 1] = lp[:n - 1]
            off += n
    return {"top_ids": ids, "top_logprobs": lps}


def compare(a: Path, b: Path) -> dict:
    """Agreement of two logits folders over the same examples: top-1 and top-k set agreement, and |difference|
    of the log-probabilities both hold for the same id (max, mean, and max relative to the value)."""
    x, y = TopK(a), TopK(b)
    if x.manifest["data_fingerprint"] != y.manifest["data_fingerprint"] or x.k != y.k or len(x) != len(y):
        raise CotgenError(f"{a} and {b} hold logits of different data or k")
    rows = top1 = 0
    overlap, diffs, rel = [], [], []
    for i in range(len(x)):
        tx, ix, lx = x.example(i)
        ty, iy, ly = y.example(i)
        if not np.array_equal(tx, ty):
            raise CotgenError(f"example {i} has different tokens in {a} and {b}")
        rows += len(ix)
        top1 += int(np.sum(ix[:, 0] == iy[:, 0]))
        for r in range(len(ix)):
            _, ja, jb = np.intersect1d(ix[r], iy[r], return_indices=True)
            overlap.append(len(ja) / x.k)
            d = np.abs(lx[r, ja].astype(np.float32) - ly[r, jb].astype(np.float32))
            diffs.append(d)
            rel.append(d / np.maximum(np.abs(lx[r, ja].astype(np.float32)), 1.0))
    diffs, rel = np.concatenate(diffs), np.concatenate(rel)
    return {"rows": rows, "k": x.k, "top1_agreement": top1 / rows,
            "topk_overlap_mean": float(np.mean(overlap)),
            "topk_overlap_min": float(np.min(overlap)), "max_abs_diff": float(diffs.max()),
            "mean_abs_diff": float(diffs.mean()), "p99_abs_diff": float(np.percentile(diffs, 99)),
            "max_rel_diff": float(rel.max())}
