"""A smaller Gemma 3 student with the teacher's vocabulary: the first N decoder layers of a HF Gemma 3 folder.

Keeping a prefix of the layers keeps Gemma 3's 5 local : 1 global `layer_types` pattern valid for any N (the
pattern is positional), the embedding (tied to the output projection), the final norm and the tokenizer files;
the result is an ordinary model folder (`--student runs/x/student`). Truncation from the teacher is the usual
start for layer-pruned students (Minitron, Sreenivas et al. 2024): the student begins close to the teacher's
distribution, so distillation has something to repair rather than everything to learn.

    python -m cotgen.distill.student gemma-3-270m --layers 6 --out runs/x/student
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
from pathlib import Path

from cotgen.errors import CotgenError
from cotgen.io import atomic_dir

COPIED = ("tokenizer.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
          "generation_config.json", "added_tokens.json", "chat_template.jinja")
_LAYER = re.compile(r"(?:^|\.)layers\.(\d+)\.")


def truncate(teacher: str | Path, layers: int, out: Path) -> Path:
    """Write `out`: the HF folder of `teacher` (a spec or folder) with only its first `layers` layers."""
    from safetensors.numpy import load_file, save_file

    from cotgen.models import resolve

    source = resolve(str(teacher))
    if source.kind != "hf":
        raise CotgenError(f"{teacher}: truncation needs a Hugging Face folder, got a {source.kind} model")
    folder = source.path
    config = json.loads((folder / "config.json").read_text())
    text = config.get("text_config", config)
    total = text["num_hidden_layers"]
    if not 1 <= layers <= total:
        raise CotgenError(f"--layers must be in 1..{total} for {teacher}, got {layers}")
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise CotgenError(f"--out {out} is not empty; choose another folder")
    text["num_hidden_layers"] = layers
    if "layer_types" in text:
        text["layer_types"] = text["layer_types"][:layers]
    with atomic_dir(out) as tmp:
        kept = {}
        for path in sorted(folder.glob("*.safetensors")):
            for name, value in load_file(str(path)).items():
                match = _LAYER.search(name)
                if match is None or int(match.group(1)) < layers:
                    kept[name] = value
        save_file(kept, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        for name in COPIED:
            if (folder / name).is_file():
                shutil.copy2(folder / name, tmp / name)
        (tmp / "cotgen-student.json").write_text(json.dumps(
            {"teacher": str(teacher), "teacher_folder": str(folder), "layers": layers, "of": total}, indent=2)
            + "\n")
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("teacher", help="model spec or HF folder, e.g. gemma-3-270m")
    parser.add_argument("--layers", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    print(truncate(args.teacher, args.layers, args.out))


if __name__ == "__main__":
    main()
