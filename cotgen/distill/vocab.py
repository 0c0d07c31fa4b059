"""The vocabulary guard: teacher and student must share one tokenizer, and their logits one index space.

Gemma 3's tokenizer has 262,144 pieces. Hugging Face's Gemma 3 4B and larger carry 262,208 embedding rows (the
64 extra rows belong to image tokens) against 262,144 for the 1B and 270M (tunix issue #1651): their logits
are sliced to the shared 262,144 before any KL. Gemma 2's tokenizer (256,000 pieces) is another vocabulary:
a Gemma 2 teacher and a Gemma 3 student (or the reverse) are refused by family, naming which model is which;
distil across families through traces instead. Any other difference, in the tokenizer or the embedding, is an
error raised before any work starts. Light module: the tokenizer object is passed in.
"""

from __future__ import annotations

import hashlib

from cotgen.errors import CotgenError

GEMMA3_VOCAB = 262_144
GEMMA3_MULTIMODAL_ROWS = 262_208  # HF's 4B/12B/27B embedding rows


def tokenizer_hash(tokenizer) -> str:
    """sha256 of the tokenizer's pieces in id order plus its special ids: equal hashes, same token ids."""
    sp, hf = getattr(tokenizer, "_sp", None), getattr(tokenizer, "_hf", None)
    n = tokenizer.vocab_size
    if sp is not None:
        pieces = (sp.id_to_piece(i) for i in range(n))
    elif hf is not None:
        pieces = (p or "" for p in hf.convert_ids_to_tokens(list(range(n))))
    else:  # any tokenizer with encode/decode: hash the decoded ids (slower, still exact per id)
        pieces = (tokenizer.decode([i]) for i in range(n))
    h = hashlib.sha256(f"{n}:{tokenizer.pad_id()}:{tokenizer.eos_id()}:{tokenizer.bos_id()}".encode())
    for piece in pieces:
        h.update(piece.encode("utf-8", "surrogatepass") + b"\x00")
    return h.hexdigest()


def logits_vocab(num_embed: int) -> int:
    """The rows of a model's logits that distillation keeps: the text vocabulary."""
    return GEMMA3_VOCAB if num_embed == GEMMA3_MULTIMODAL_ROWS else num_embed


def same_family(teacher: str, teacher_family: str | None, student: str, student_family: str | None,
                teacher_rows: int | None = None, student_rows: int | None = None) -> None:
    """CotgenError naming both models, their families and vocabulary sizes when one is Gemma 2 and the other
    Gemma 3 (their tokenizers differ); nothing when either family is unknown. Cheap: callers run it before
    loading weights, with the rows unknown (the families' tokenizer sizes are named instead)."""
    if not (teacher_family and student_family and teacher_family != student_family):
        return
    from cotgen.models.families import FAMILIES

    t, s = FAMILIES[teacher_family], FAMILIES[student_family]
    t_rows = f", {teacher_rows} embedding rows" if teacher_rows is not None else ""
    s_rows = f", {student_rows} embedding rows" if student_rows is not None else ""
    raise CotgenError(
        f"logit distillation across Gemma families is refused: teacher {teacher} is {t.title} ({t.vocab:,}-piece "
        f"vocabulary{t_rows}) and student {student} is {s.title} ({s.vocab:,}-piece vocabulary{s_rows}), so "
        f"their logits do not line up; use a {s.title} teacher, or distil through traces (cotgen generate, then "
        "cotgen train)")


def shared_vocab(teacher: str, teacher_tok: str, teacher_rows: int,
                 student: str, student_tok: str, student_rows: int, *,
                 teacher_family: str | None = None, student_family: str | None = None) -> int:
    """The vocabulary size both sides are cut to; CotgenError naming both models when they do not match.

    `*_tok` are `tokenizer_hash` values, `*_rows` embedding rows (or the stored logits' vocabulary), `*_family`
    "gemma2" | "gemma3" where known (`cotgen.models.family`)."""
    same_family(teacher, teacher_family, student, student_family, teacher_rows, student_rows)
    if teacher_tok != student_tok:
        raise CotgenError(f"teacher {teacher} and student {student} use different tokenizers (hash "
                          f"{teacher_tok[:12]} vs {student_tok[:12]}): logit distillation needs one "
                          "vocabulary (the Gemma 3 family shares one)")
    t, s = logits_vocab(teacher_rows), logits_vocab(student_rows)
    if t != s:
        raise CotgenError(f"teacher {teacher} has {teacher_rows} embedding rows and student {student} has "
                          f"{student_rows}: only Gemma 3's {GEMMA3_MULTIMODAL_ROWS} vs {GEMMA3_VOCAB} "
                          "difference is sliced; these do not share a vocabulary")
    return s
