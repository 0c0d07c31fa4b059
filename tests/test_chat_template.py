"""Chat templates of exports (`cotgen.models.chat_template`) and the openai backend's `--api chat`, against a
scripted local HTTP server (it checks cotgen's request bodies and returns canned answers)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import ClassVar

import openai_stub
import polars as pl
import pytest
from click.testing import CliRunner

from cotgen import prompts
from cotgen.cli import main
from cotgen.engines.backend import Request, Sampling
from cotgen.errors import CotgenError
from cotgen.generate.config import GenerateConfig, resolved
from cotgen.models import chat_template as ct
from cotgen.models import is_base_model

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
needs_data = pytest.mark.usefixtures("data_dir")  # conftest fails clearly without ../shared/data
QUESTIONS = ["What is 6 * 7?", "  Natalia sold clips to 48 of her friends in April.\nHow many?  ", "a\n\nb\t"]

CONVERSATIONS = {
    "user": [{"role": "user", "content": "Hi"}],
    "multi_turn": [{"role": "user", "content": " Hi "}, {"role": "assistant", "content": "Hello.\n"},
                   {"role": "user", "content": "6 * 7?"}],
    "model_role": [{"role": "user", "content": "Hi"}, {"role": "model", "content": "Hello."}],
    "text_parts": [{"role": "user", "content": [{"type": "text", "text": " Hi "}, {"type": "text", "text": "x"}]}],
    "system": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
}
GOOGLE_GEMMA3 = ct.template("gemma3").replace(  # Google's own, image branch included: renders text the same
    "{%- if item['type'] == 'text' -%}",
    "{%- if item['type'] == 'image' -%}\n{{ '<start_of_image>' }}\n{%- elif item['type'] == 'text' -%}")
CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


# ---- the templates -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", ct.FAMILIES)
@pytest.mark.parametrize("question", QUESTIONS)
def test_one_user_message_renders_the_student_prompt_the_model_was_trained_on(family, question):
    messages = [{"role": "user", "content": prompts.render("student", question=question)}]
    # train/data.py: <bos> (add_bos) + the student prompt; the template writes {{ bos_token }} itself
    assert ct.render(messages, family=family) == ct.BOS + prompts.student_prompt(question)
    teacher = [{"role": "user", "content": prompts.render("teacher_cot", question=question)}]
    assert ct.render(teacher, family=family) == ct.BOS + prompts.teacher_prompt(question, style="chat")


def test_gemma3_golden():
    assert ct.render(CONVERSATIONS["system"]) == (
        "<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\n")
    assert ct.render(CONVERSATIONS["multi_turn"], add_generation_prompt=False) == (
        "<bos><start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\nHello.<end_of_turn>\n"
        "<start_of_turn>user\n6 * 7?<end_of_turn>\n")


@pytest.mark.parametrize("name", [n for n in CONVERSATIONS if n != "text_parts"])
def test_gemma3_template_agrees_with_cotgens_turn_template(name):
    messages = CONVERSATIONS[name]
    for gen in (True, False):
        assert ct.render(messages, add_generation_prompt=gen) == ct.BOS + prompts.gemma_chat(
            messages, add_generation_prompt=gen)


@pytest.mark.parametrize("family", ct.FAMILIES)
@pytest.mark.parametrize("name", CONVERSATIONS)
def test_transformers_renders_the_templates_as_cotgen_does(family, name):
    from transformers.utils.chat_template_utils import render_jinja_template

    messages = CONVERSATIONS[name]
    if family == "gemma2" and name in ("system", "text_parts"):
        return  # gemma2 refuses a system role (below); text parts are vLLM's to flatten for it
    rendered, _ = render_jinja_template([messages], chat_template=ct.template(family), add_generation_prompt=True,
                                        bos_token="<bos>", eos_token="<eos>")
    assert rendered[0] == ct.render(messages, family=family)


def test_gemma2_refuses_a_system_role_and_both_refuse_bad_order_and_images():
    with pytest.raises(ValueError, match="System role not supported"):
        ct.render(CONVERSATIONS["system"], family="gemma2")
    for family in ct.FAMILIES:
        with pytest.raises(ValueError, match="must alternate"):
            ct.render([{"role": "assistant", "content": "x"}], family=family)
    with pytest.raises(ValueError, match="text only"):
        ct.render([{"role": "user", "content": [{"type": "image", "url": "x"}]}])
    with pytest.raises(CotgenError, match="known: gemma3, gemma2"):
        ct.template("gemma4")


# ---- write() -------------------------------------------------------------------------------------------
def _folder(tmp_path: Path, model_type: str = "gemma3_text", **files) -> Path:
    folder = tmp_path / "model"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"model_type": model_type}))
    for name, value in files.items():
        name = name.replace("__", ".")
        (folder / name).write_text(value if isinstance(value, str) else json.dumps(value))
    return folder


def test_write_creates_or_updates_tokenizer_config_and_the_jinja_file(tmp_path):
    folder = _folder(tmp_path, tokenizer_config__json={"bos_token": "<bos>", "add_bos_token": True})
    assert is_base_model(str(folder))  # a Gemma folder without a template: a base model
    assert ct.write(folder) == ct.template("gemma3")
    tok = json.loads((folder / "tokenizer_config.json").read_text())
    assert tok == {"bos_token": "<bos>", "add_bos_token": True, "chat_template": ct.template("gemma3")}
    assert (folder / "chat_template.jinja").read_text() == ct.template("gemma3")
    assert not is_base_model(str(folder))  # now a chat model
    bare = _folder(tmp_path / "b", model_type="gemma2")
    ct.write(bare)  # family from config.json
    assert json.loads((bare / "tokenizer_config.json").read_text()) == {"chat_template": ct.template("gemma2")}
    assert ct.existing(bare) == ct.template("gemma2") and ct.family_of(bare) == "gemma2"
    ct.write(bare, "gemma2")  # idempotent
    assert (bare / "chat_template.jinja").read_text() == ct.template("gemma2")


def test_write_keeps_a_gemma_template_the_base_had_and_replaces_any_other(tmp_path, caplog):
    assert "<start_of_image>" in GOOGLE_GEMMA3 and GOOGLE_GEMMA3 != ct.template("gemma3")
    google = _folder(tmp_path / "g", tokenizer_config__json={"chat_template": GOOGLE_GEMMA3})
    assert ct.write(google) == GOOGLE_GEMMA3
    assert (google / "chat_template.jinja").read_text() == GOOGLE_GEMMA3
    assert json.loads((google / "tokenizer_config.json").read_text())["chat_template"] == GOOGLE_GEMMA3
    named = [{"name": "default", "template": GOOGLE_GEMMA3}, {"name": "tool_use", "template": "x"}]
    listed = _folder(tmp_path / "l", tokenizer_config__json={"chat_template": named})
    ct.write(listed)  # a named list stays whole (a chat_template.jinja would hide tool_use)
    assert json.loads((listed / "tokenizer_config.json").read_text())["chat_template"] == named
    assert not (listed / "chat_template.jinja").exists()
    with caplog.at_level(logging.WARNING):
        chatml = _folder(tmp_path / "c", chat_template__jinja=CHATML, chat_template__json={"chat_template": CHATML})
        assert ct.write(chatml) == ct.template("gemma3")
    assert "replacing its chat template" in caplog.text
    assert (chatml / "chat_template.jinja").read_text() == ct.template("gemma3")
    assert json.loads((chatml / "chat_template.json").read_text())["chat_template"] == ct.template("gemma3")
    # the other family's template refuses (or accepts) a system message where this family's does not
    assert ct.write(_folder(tmp_path / "x", chat_template__jinja=ct.template("gemma2"))) == ct.template("gemma3")
    assert ct.write(_folder(tmp_path / "y", "gemma2", chat_template__jinja=ct.template("gemma3"))) == ct.template(
        "gemma2")


def test_transformers_tokenizer_applies_the_written_template(tmp_path):
    """The tiny SentencePiece tokenizer, as an HF folder: apply_chat_template gives exactly the training ids."""
    import shutil

    from transformers import AutoTokenizer

    from cotgen.models.tiny import tokenizer_path
    from cotgen.models.tokenizer import Tokenizer

    folder = _folder(tmp_path, tokenizer_config__json={"tokenizer_class": "GemmaTokenizer", "bos_token": "<bos>",
                                                       "eos_token": "<eos>", "unk_token": "<unk>",
                                                       "pad_token": "<pad>"})
    shutil.copy(tokenizer_path(), folder / "tokenizer.model")
    ct.write(folder)
    hf = AutoTokenizer.from_pretrained(str(folder))
    question = "What is 2 + 3?"
    messages = [{"role": "user", "content": prompts.render("student", question=question)}]
    text = hf.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert text == "<bos>" + prompts.student_prompt(question)
    ids = hf.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
    assert list(ids) == Tokenizer.from_folder(folder).encode(prompts.student_prompt(question), add_bos=True)


@needs_data
def test_export_writes_the_template(tmp_path, gsm8k_rows):
    from cotgen.models import EXPORT_MANIFEST
    from cotgen.train.config import TrainConfig
    from cotgen.train.export import export
    from cotgen.train.sft import run

    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in gsm8k_rows(2)))
    run(TrainConfig(model="tiny", data=train, out=tmp_path / "run", steps=1, batch_size=2, max_len=256,
                    tensorboard=False))
    out = tmp_path / "hf"
    export(tmp_path / "run", "safetensors", out)
    assert (out / EXPORT_MANIFEST).is_file()
    assert (out / "chat_template.jinja").read_text() == ct.template("gemma3")
    assert json.loads((out / "tokenizer_config.json").read_text())["chat_template"] == ct.template("gemma3")
    assert not is_base_model(str(out))


# ---- openai backend, --api chat -------------------------------------------------------------------------
class _Chat(openai_stub.Scripted):
    """Answers /v1/chat/completions from a per-user-message script: 'ok', 'garbage', '500', '400', 'nomsg'."""

    model_id = "student"
    script: ClassVar[dict] = {}
    calls: ClassVar[list] = []

    def do_POST(self):
        body = self._body()
        self.calls.append({"path": self.path, **body})
        if self.path != "/v1/chat/completions":
            return self._send(404, {"error": {"message": f"no route {self.path}"}})
        plan = self.script.get(body["messages"][-1]["content"], ["ok"])
        what = plan.pop(0) if len(plan) > 1 else plan[0]
        if what == "garbage":
            return self._send(200, "{not json")
        if what in ("500", "400"):
            return self._send(int(what), {"error": {"message": what}})
        message = {"role": "assistant", "content": None if what == "nomsg" else
                   f"<reasoning>seed {body.get('seed')}</reasoning>\n<answer>18</answer>"}
        logprobs = None
        if body.get("logprobs"):
            top = [{"token": "token_id:7", "logprob": -2.0, "bytes": None},
                   {"token": "token_id:5", "logprob": -0.1, "bytes": None}]
            logprobs = {"content": [{"token": "token_id:5", "logprob": -0.1, "bytes": None, "top_logprobs": top}]}
        self._send(200, {"id": "c", "object": "chat.completion", "created": 0, "model": "student",
                         "choices": [{"index": 0, "message": message, "finish_reason": "stop",
                                      "logprobs": logprobs}],
                         "usage": {"prompt_tokens": 50, "completion_tokens": 9, "total_tokens": 59}})


@pytest.fixture
def chat_server():
    _Chat.calls.clear()
    _Chat.script = {}
    with openai_stub.serve(_Chat) as served:
        yield served


def _backend(url: str, sampling: Sampling, **kw):
    from cotgen.engines.openai_backend import OpenAIBackend

    cfg = GenerateConfig(teacher="student", backend="openai", base_url=url, api="chat", prompt_style="chat", **kw)
    return OpenAIBackend(cfg.teacher, cfg, sampling)


def test_chat_requests_carry_the_user_turn_once_with_every_sampling_parameter(chat_server):
    url, handler = chat_server
    content = prompts.render("student", question="What is 6 * 7?").strip()
    backend = _backend(url, Sampling(2, 0.7, 0.9, 32, 2, ("STOP",), (1, 106)))
    samples = backend.generate([Request("p", prompts.student_prompt("What is 6 * 7?"), (0, 1), 100)])
    backend.close()
    assert [s.completion for s in samples] == [f"<reasoning>seed {i}</reasoning>\n<answer>18</answer>"
                                               for i in (100, 101)]
    assert [(s.seed, s.finish_reason, s.prompt_tokens, s.completion_tokens) for s in samples] == [
        (100, "stop", 50, 9), (101, "stop", 50, 9)]
    assert samples[0].logprobs == [{"token_id": 5, "logprob": -0.1, "top_ids": [5, 7], "top_logprobs": [-0.1, -2.0]}]
    for call, seed in zip(sorted(handler.calls, key=lambda c: c["seed"]), (100, 101)):
        assert call == {"path": "/v1/chat/completions", "model": "student",
                        "messages": [{"role": "user", "content": content}], "n": 1, "seed": seed,
                        "temperature": 0.7, "top_p": 0.9, "max_tokens": 32, "stop": ["STOP"], "logprobs": True,
                        "top_logprobs": 2, "return_tokens_as_token_ids": True}
    assert "<start_of_turn>" not in content and "<end_of_turn>" not in content  # the server adds the markers


def test_chat_retries_like_completions_and_records_errors(chat_server, monkeypatch):
    from cotgen.engines import openai_backend

    monkeypatch.setattr(openai_backend, "BACKOFF_S", 0.01)
    url, handler = chat_server
    handler.script = {"flaky": ["500", "garbage", "nomsg", "ok"], "down": ["500"], "bad": ["400"]}
    backend = _backend(url, Sampling(1, 0.0, 1.0, 8, 0, (), (1, 106), seeded=False), max_retries=3)
    reqs = [Request(q, prompts.gemma_chat([{"role": "user", "content": q}]), (0,), 7) for q in handler.script]
    reqs.append(Request("raw", "Question: not a Gemma turn\n", (0,), 7))
    samples = {s.problem_id: s for s in backend.generate(reqs)}
    backend.close()
    assert samples["flaky"].error is None and samples["flaky"].seed is None
    assert "after 4 attempts" in samples["down"].error and samples["down"].finish_reason == "error"
    assert "400" in samples["bad"].error and sum(c["messages"][0]["content"] == "bad" for c in handler.calls) == 1
    assert "not one Gemma user turn" in samples["raw"].error  # never sent
    assert all("seed" not in c and "logprobs" not in c and "stop" not in c for c in handler.calls)


def test_chat_api_option_checks():
    with pytest.raises(CotgenError, match=r"--api chat .*--prompt-style chat"):
        resolved(GenerateConfig(backend="openai", api="chat", prompt_style="few_shot"))
    with pytest.raises(CotgenError, match="--api chat .*--prompt-style"):  # the base 270M defaults to few_shot
        resolved(GenerateConfig(teacher="gemma-3-270m", backend="openai", api="chat"))
    with pytest.raises(CotgenError, match="--api chat is for --backend openai"):
        GenerateConfig(backend="vllm", api="chat")
    with pytest.raises(CotgenError, match="unknown --api 'responses'"):
        GenerateConfig(backend="openai", api="responses")
    assert GenerateConfig(api="completions").api is None  # the default, stored as None (old records stay valid)
    assert resolved(GenerateConfig(teacher="my-student", backend="openai", api="chat")).prompt_style == "chat"
    from cotgen.eval.config import EvalConfig
    from cotgen.eval.config import resolved as eval_resolved

    with pytest.raises(CotgenError, match="--api chat .*--prompt-style"):
        eval_resolved(EvalConfig(model="gemma-3-270m", backend="openai", api="chat"))


@needs_data
def test_generate_and_eval_cli_with_api_chat(chat_server, tmp_path):
    url, handler = chat_server
    common = ["--backend", "openai", "--api", "chat", "--base-url", url, "--source", "gsm8k", "--limit", "2",
              "--data-dir", str(DATA)]
    out = tmp_path / "traces"
    res = CliRunner().invoke(main, ["generate", "--teacher", "student", "--split", "train", "--n", "2",
                                    "--out", str(out), *common])
    assert res.exit_code == 0, res.output
    from cotgen.generate import store

    df = store.read_traces(out)
    assert df.height == 4 and df["error"].null_count() == 4 and (df["prompt_style"] == "chat").all()
    assert 'api = "chat"' in (out / "config.toml").read_text()
    assert {c["path"] for c in handler.calls} == {"/v1/chat/completions"}
    handler.calls.clear()
    ev = tmp_path / "eval"
    res = CliRunner().invoke(main, ["eval", "--model", "student", "--out", str(ev), *common])
    assert res.exit_code == 0, res.output
    assert len(handler.calls) == 2 and all(c["temperature"] == 0.0 for c in handler.calls)
    samples = pl.read_parquet(ev / "samples.parquet")
    assert samples.height == 2 and samples["format_ok"].all()
    assert json.loads((ev / "metrics.json").read_text())["protocol"]["model_info"]["api"] == "chat"
    res = CliRunner().invoke(main, ["eval", "--model", "student", "--prompt-style", "few_shot", "--out",
                                    str(tmp_path / "e2"), *common])
    assert res.exit_code == 2 and "--api chat" in res.output and "--prompt-style" in res.output
