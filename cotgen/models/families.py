"""The Gemma families cotgen loads, as facts that need no JAX: Hugging Face names, real vocabularies, presets.

Gemma 2 and Gemma 3 differ in their Tunix classes (`tunix.models.gemma` vs `tunix.models.gemma3`), their HF
architectures and their tokenizers: Gemma 2's has 256,000 pieces (`<start_of_turn>` 106, `<end_of_turn>` 107;
Kaggle's flax checkpoints pad the embedding to 256,128 rows), Gemma 3's 262,144 (105, 106). Both use pad 0,
eos 1, bos 2. The Tunix side of each family (configs, loaders, the output head) is in `cotgen.models.load`;
the Hugging Face names in `cotgen.models.hf`.
"""

from __future__ import annotations

import dataclasses
import re

from cotgen.errors import CotgenError


@dataclasses.dataclass(frozen=True)
class Family:
    name: str  # "gemma2" | "gemma3"
    title: str  # for messages: "Gemma 2"
    hf_model_types: tuple[str, ...]  # config.json model_type values
    hf_architecture: str
    vocab: int  # pieces of the real tokenizer
    end_of_turn: int  # id of <end_of_turn> in the real tokenizer
    name_markers: tuple[str, ...]  # substrings of hub / Kaggle names ("google/gemma-2-2b-it", "gemma2-2b-it")


FAMILIES = {
    "gemma2": Family("gemma2", "Gemma 2", ("gemma2",), "Gemma2ForCausalLM", 256_000, 107, ("gemma-2", "gemma2")),
    "gemma3": Family("gemma3", "Gemma 3", ("gemma3_text", "gemma3"), "Gemma3ForCausalLM", 262_144, 106,
                     ("gemma-3", "gemma3")),
}
# cotgen's tiny random models, also accepted as orbax preset names (tests write Kaggle layouts from them)
TINY_PRESETS = {"tiny": "gemma3", "tiny_gemma2": "gemma2"}


def from_model_type(model_type, where: str) -> Family:
    """The family of a HF `config.json` model_type; one CotgenError line naming `where` otherwise."""
    for fam in FAMILIES.values():
        if model_type in fam.hf_model_types:
            return fam
    known = ", ".join(t for fam in FAMILIES.values() for t in fam.hf_model_types)
    raise CotgenError(f"{where}: model_type {model_type!r} is not Gemma 3 or Gemma 2 "
                      f"(cotgen loads model_type {known})")


def preset_family(preset: str) -> Family | None:
    """The family of a Tunix preset name (gemma2_2b_it, gemma3_1b_it, ...) or a tiny preset; None if neither."""
    if preset in TINY_PRESETS:
        return FAMILIES[TINY_PRESETS[preset]]
    return FAMILIES.get(preset.split("_", 1)[0])


def preset_name(folder_name: str) -> str:
    """A Kaggle checkpoint folder name as a preset name: gemma3-1b-it -> gemma3_1b_it, tiny-gemma2 -> tiny_gemma2."""
    return re.sub(r"[-.]", "_", folder_name.strip().lower())


def from_name(name: str) -> Family | None:
    """The family a model name says it is ("google/gemma-2-2b-it", "gemma3-1b"), or None."""
    lowered = name.lower()
    hits = [fam for fam in FAMILIES.values() if any(m in lowered for m in fam.name_markers)]
    return hits[0] if len(hits) == 1 else None
