"""The tokenizer every stage uses: a SentencePiece model (Gemma's own format) or, failing that, a HF tokenizer.

It has the methods Tunix's `TokenizerAdapter` accepts (`encode`, `decode`, `bos_id`, `eos_id`, `pad_id`), so the same
object goes to Tunix samplers and trainers and to cotgen's own code.
"""

from __future__ import annotations

from pathlib import Path

from cotgen.errors import CotgenError

END_OF_TURN = "<end_of_turn>"


class Tokenizer:
    def __init__(self, sp=None, hf=None):
        self._sp, self._hf = sp, hf

    @classmethod
    def from_file(cls, model_file: str | Path) -> "Tokenizer":
        """A SentencePiece `tokenizer.model`."""
        import sentencepiece as spm

        return cls(sp=spm.SentencePieceProcessor(model_file=str(model_file)))

    @classmethod
    def from_folder(cls, folder: str | Path) -> "Tokenizer":
        folder = Path(folder)
        if (folder / "tokenizer.model").is_file():
            return cls.from_file(folder / "tokenizer.model")
        if (folder / "tokenizer.json").is_file():
            from transformers import AutoTokenizer

            return cls(hf=AutoTokenizer.from_pretrained(str(folder)))
        raise CotgenError(f"{folder}: no tokenizer.model or tokenizer.json")

    def encode(self, text: str, add_bos: bool = False, **_) -> list[int]:
        if self._sp is not None:
            ids = self._sp.encode(text)
        else:
            ids = self._hf.encode(text, add_special_tokens=False)
        return [self.bos_id(), *ids] if add_bos else list(ids)

    def decode(self, ids, **_) -> str:
        ids = [int(i) for i in ids]
        return self._sp.decode(ids) if self._sp is not None else self._hf.decode(ids)

    def bos_id(self) -> int:
        return self._sp.bos_id() if self._sp is not None else self._hf.bos_token_id

    def eos_id(self) -> int:
        return self._sp.eos_id() if self._sp is not None else self._hf.eos_token_id

    def pad_id(self) -> int:
        pad = self._sp.pad_id() if self._sp is not None else self._hf.pad_token_id
        return 0 if pad is None or pad < 0 else pad

    def piece_to_id(self, piece: str) -> int | None:
        if self._sp is not None:
            idx = self._sp.piece_to_id(piece)
            return None if idx == self._sp.unk_id() and piece != "<unk>" else idx
        return self._hf.convert_tokens_to_ids(piece)

    @property
    def vocab_size(self) -> int:
        return self._sp.get_piece_size() if self._sp is not None else len(self._hf)

    @property
    def stop_ids(self) -> tuple[int, ...]:
        """Token ids that end a generation: `<eos>` and, where the vocabulary has it, `<end_of_turn>`."""
        eot = self.piece_to_id(END_OF_TURN)
        return (self.eos_id(),) if eot is None else (self.eos_id(), eot)
