"""Chat templates for cotgen's exports, so `vllm serve EXPORT` answers chat requests and
`tokenizer.apply_chat_template` works on them.

The templates are Google's own, as the instruction-tuned checkpoints ship them in `tokenizer_config.json`
(`google/gemma-3-1b-it`, `google/gemma-2-2b-it`), kept as Jinja files beside cotgen's prompts:
- `prompts/chat_template_gemma3.jinja`: `{{ bos_token }}`, then `<start_of_turn>user\\n...<end_of_turn>\\n` and
  `<start_of_turn>model\\n...` turns (role "assistant" is written "model"), contents trimmed, a leading system
  message folded into the first user turn followed by a blank line, `<start_of_turn>model\\n` when
  `add_generation_prompt`. Deviation: text only; Google's emits `<start_of_image>` for image parts, this one
  raises on any non-text part.
- `prompts/chat_template_gemma2.jinja`: Google's Gemma 2 template verbatim: the same turns, a system message
  raises.

For one user message with `add_generation_prompt=True` both render exactly `<bos>` + `prompts.student_prompt`,
the text the student was trained on (`train/data.py` encodes the prompt with a leading BOS), so a served student
sees its training prompt token for token (tests/test_chat_template.py checks it, and that HF's own renderer
agrees).

`write(folder, family)` puts the template into `tokenizer_config.json` (created if absent) and
`chat_template.jinja` (which transformers reads first). A template the folder already has (copied from an
instruction-tuned base, say) is kept when it renders the probe conversations (`PROBES`) exactly as the family's
does and refuses what it refuses; any other (a non-Gemma one, or the other family's) is replaced, with a
warning. The family comes from `config.json`'s `model_type` when not given: "gemma2" -> gemma2, else gemma3.
Exports are chat models either way (`cotgen.models.is_base_model` reads their manifest); the prepared base
270M folder gets no template and stays a base model.
"""

from __future__ import annotations

import json
import logging
from functools import lru_cache
from pathlib import Path

from cotgen.errors import CotgenError

log = logging.getLogger(__name__)

FAMILIES = ("gemma3", "gemma2")
NAMES = {"gemma3": "Gemma 3", "gemma2": "Gemma 2"}
TEMPLATE_FILE = "chat_template.jinja"
TOKENIZER_CONFIG = "tokenizer_config.json"
BOS = "<bos>"
_DIR = Path(__file__).resolve().parents[1] / "prompts"

# Conversations a kept template must render exactly as the family's (or refuse, where it refuses): the student's
# own request, a short multi-turn exchange (servers send whole histories) and a system message (Gemma 3 folds it
# into the first user turn, Gemma 2 refuses it).
PROBES = (
    [{"role": "user", "content": "What is 6 * 7?"}],
    [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."},
     {"role": "user", "content": " What is 6 * 7?\n"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 6 * 7?"}],
)


@lru_cache(maxsize=None)
def template(family: str = "gemma3") -> str:
    """The chat template text of a Gemma family."""
    if family not in FAMILIES:
        raise CotgenError(f"unknown chat template family {family!r}; known: {', '.join(FAMILIES)}")
    return (_DIR / f"chat_template_{family}.jinja").read_text(encoding="utf-8").removesuffix("\n")


def family_of(folder: str | Path) -> str:
    """The folder's family (`cotgen.models.known_family`: its config.json model_type), Gemma 3 where unknown."""
    from cotgen.models import known_family

    return known_family(str(folder)) or "gemma3"


def _raise_exception(message: str):
    raise ValueError(message)


@lru_cache(maxsize=16)
def _compiled(text: str):
    """Compiled as transformers compiles chat templates (sandboxed, trim_blocks, lstrip_blocks)."""
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    env.globals["raise_exception"] = _raise_exception
    return env.from_string(text)


def render(messages: list[dict], *, family: str = "gemma3", chat_template: str | None = None,
           add_generation_prompt: bool = True, bos_token: str = BOS) -> str:
    """`messages` rendered by a chat template (the family's unless `chat_template` is given), as
    `apply_chat_template(..., tokenize=False)` renders them; a rejected conversation raises ValueError."""
    text = template(family) if chat_template is None else chat_template
    return _compiled(text).render(messages=messages, add_generation_prompt=add_generation_prompt,
                                  bos_token=bos_token, eos_token="<eos>")


def existing(folder: str | Path) -> str | None:
    """The chat template a folder already has: chat_template.jinja, else tokenizer_config.json's (a named
    list's "default"), else chat_template.json's; None when it has none."""
    folder = Path(folder)
    if (folder / TEMPLATE_FILE).is_file():
        return (folder / TEMPLATE_FILE).read_text(encoding="utf-8")
    for name in (TOKENIZER_CONFIG, "chat_template.json"):
        value = _read_json(folder / name).get("chat_template")
        if isinstance(value, list):
            value = next((t.get("template") for t in value if isinstance(t, dict) and t.get("name") == "default"),
                         None)
        if isinstance(value, str) and value.strip():
            return value
    return None


def renders_like(chat_template: str, family: str = "gemma3") -> bool:
    """True when `chat_template` renders every probe conversation exactly as the family's template does, and
    refuses the ones it refuses."""

    def outcome(messages, **which):
        try:
            return render(messages, **which)
        except Exception:  # noqa: BLE001 - refused, or a template that does not compile: compared as such
            return None

    return all(outcome(m, chat_template=chat_template) == outcome(m, family=family) for m in PROBES)


def write(folder: str | Path, family: str | None = None) -> str:
    """Give the model folder `folder` a Gemma chat template (see the module docstring); return the template
    now in place."""
    folder = Path(folder)
    family = family or family_of(folder)
    tok = _read_json(folder / TOKENIZER_CONFIG)
    found = existing(folder)
    if found is not None and renders_like(found, family):  # ours, or the base's own Gemma template: kept
        if "chat_template" not in tok:
            _write_json(folder / TOKENIZER_CONFIG, {**tok, "chat_template": found})
        if not (folder / TEMPLATE_FILE).is_file() and isinstance(tok.get("chat_template", found), str):
            (folder / TEMPLATE_FILE).write_text(found, encoding="utf-8")  # a named list stays the only copy
        return found
    if found is not None:
        log.warning("%s: replacing its chat template, which does not render %s turns as the model was trained "
                    "on them, with Google's", folder, NAMES[family])
    chosen = template(family)
    _write_json(folder / TOKENIZER_CONFIG, {**tok, "chat_template": chosen})
    (folder / TEMPLATE_FILE).write_text(chosen, encoding="utf-8")
    if (folder / "chat_template.json").is_file():  # processors read this one
        _write_json(folder / "chat_template.json", {**_read_json(folder / "chat_template.json"),
                                                    "chat_template": chosen})
    return chosen


def _read_json(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise CotgenError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(value, dict):
        raise CotgenError(f"{path}: expected a JSON object")
    return value


def _write_json(path: Path, value: dict) -> None:
    path.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
