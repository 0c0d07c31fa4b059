"""The model resolver: spec parsing, Tunix loading of the tiny model, vocabulary checks, the prepared 270M."""

import json
import subprocess
import sys

import numpy as np
import pytest

from cotgen.errors import CotgenError
from cotgen.io import sha256_file
from cotgen.models import ModelSource, prepare, resolve

CHECK_TEXT = "What is 12*7? Answer:"
CHECK_IDS = [2, 3689, 563, 236743, 236770, 236778, 236829, 236832, 236881, 25685, 236787]


def test_spec_parsing(tmp_path):
    assert resolve("tiny") == ModelSource("tiny", "tiny", seed=0)
    assert resolve("tiny:7").seed == 7
    (tmp_path / "config.json").write_text("{}")
    assert resolve(str(tmp_path)) == ModelSource(str(tmp_path), "hf", tmp_path)
    with pytest.raises(CotgenError, match="unknown model 'gpt-5'"):
        resolve("gpt-5")
    with pytest.raises(CotgenError, match="orbax:PRESET:PATH"):
        resolve("orbax:/only/a/path")
    with pytest.raises(CotgenError, match="does not exist"):
        resolve("orbax:gemma3_1b_it:/no/such/ckpt")
    (tmp_path / "sub").mkdir()
    with pytest.raises(CotgenError, match="no config.json"):
        resolve(str(tmp_path / "sub"))


def test_gguf_name_map():
    assert prepare.hf_name("token_embd.weight") == "model.embed_tokens.weight"
    assert prepare.hf_name("blk.3.ffn_norm.weight") == "model.layers.3.pre_feedforward_layernorm.weight"
    assert prepare.hf_name("blk.17.attn_output.weight") == "model.layers.17.self_attn.o_proj.weight"
    with pytest.raises(CotgenError):
        prepare.hf_name("blk.0.mystery.weight")


def test_verify_detects_a_damaged_folder(tmp_path):
    (tmp_path / "a.bin").write_bytes(b"weights")
    digest = sha256_file(tmp_path / "a.bin")
    (tmp_path / prepare.MANIFEST).write_text(json.dumps(
        {"format_version": prepare.FORMAT_VERSION, "sha256": {"a.bin": digest}}))
    assert prepare.verify(tmp_path) is None
    (tmp_path / "a.bin").write_bytes(b"weightz")
    assert "a.bin" in prepare.verify(tmp_path)
    (tmp_path / prepare.MANIFEST).unlink()
    assert "missing" in prepare.verify(tmp_path)


def test_tiny_model_loads_and_runs():
    import jax.numpy as jnp

    from cotgen.models.load import load

    loaded = load("tiny")
    tok = loaded.tokenizer
    ids = tok.encode("<reasoning>2 + 3 = 5</reasoning><answer>5</answer>", add_bos=True)
    assert ids[0] == 2 and tok.decode(ids[1:]) == "<reasoning>2 + 3 = 5</reasoning><answer>5</answer>"
    assert tok.piece_to_id("<reasoning>") is not None and len(tok.stop_ids) == 2
    n = len(ids)
    logits, _ = loaded.model(jnp.array([ids]), jnp.arange(n)[None], None, jnp.tril(jnp.ones((1, n, n), bool)))
    assert logits.shape == (1, n, loaded.config.num_embed)
    assert float(jnp.std(logits)) > 0  # random init, not Gemma3's zero-initialised MLPs
    other = load("tiny:1").model
    assert not np.allclose(np.asarray(other.embedder.input_embedding[...]),
                           np.asarray(loaded.model.embedder.input_embedding[...]))


def test_vocabulary_and_family_checks(tmp_path):
    from cotgen.models.load import check_vocabulary, load, tunix_config
    from cotgen.models.tiny import tokenizer_path
    from cotgen.models.tokenizer import Tokenizer

    tok = Tokenizer.from_file(tokenizer_path())
    with pytest.raises(CotgenError, match="do not belong together"):
        check_vocabulary(tok, 100, "m")
    with pytest.raises(CotgenError, match="not Gemma 3"):
        tunix_config({"model_type": "llama"}, tmp_path, None)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen2"}))
    with pytest.raises(CotgenError, match="qwen2"):
        load(str(tmp_path))


def test_tunix_config_from_hf_config(tmp_path):
    from cotgen.models.load import tunix_config

    hf = {"model_type": "gemma3_text", "num_hidden_layers": 26, "hidden_size": 1152, "intermediate_size": 6912,
          "num_attention_heads": 4, "num_key_value_heads": 1, "head_dim": 256, "sliding_window": 512,
          "rope_theta": 1000000.0, "rope_local_base_freq": 10000.0, "query_pre_attn_scalar": 256,
          "vocab_size": 262144}
    from tunix.models.gemma3.model import ModelConfig

    cfg, ref = tunix_config(hf, tmp_path, None), ModelConfig.gemma3_1b_it()
    for field in ("num_layers", "num_embed", "embed_dim", "hidden_dim", "num_heads", "head_dim", "num_kv_heads",
                  "sliding_window_size", "local_base_frequency", "global_base_frequency", "query_pre_attn_norm"):
        assert getattr(cfg, field) == getattr(ref, field), field


# ------------------------------------------------------------------------------------------- the real 270M
@pytest.mark.slow
def test_prepared_folder_tokenizer(embedded_folder):
    from transformers import AutoTokenizer

    from cotgen.models.tokenizer import Tokenizer

    manifest = json.loads((embedded_folder / prepare.MANIFEST).read_text())
    assert set(manifest["sha256"]) >= {"config.json", "model.safetensors", "tokenizer.model", "tokenizer.json"}
    sp = Tokenizer.from_folder(embedded_folder)
    assert sp.encode(CHECK_TEXT, add_bos=True) == CHECK_IDS
    assert sp.stop_ids == (1, 106) and sp.vocab_size == 262144
    hf = AutoTokenizer.from_pretrained(str(embedded_folder))
    texts = [CHECK_TEXT, "a" + " " * 40 + "b", " " * 70 + "x", "def f():\n\tif x:\n        return 1\n",
             "<start_of_turn>user\nhi<end_of_turn>\n", "naïve café 中文 ✓ 😀 1,234.5e-6", "\n\n\n  \t "]
    for text in texts:
        assert hf(text, add_special_tokens=False).input_ids == sp.encode(text), repr(text)


@pytest.mark.slow
def test_tunix_logits_match_transformers(embedded_folder):
    """Next-token logits of the Tunix model agree with transformers' independent Gemma 3 on the same folder."""
    import jax.numpy as jnp
    import torch
    from transformers import AutoModelForCausalLM

    from cotgen.models.check import greedy
    from cotgen.models.load import load

    loaded = load("gemma-3-270m")
    hf = AutoModelForCausalLM.from_pretrained(str(embedded_folder), dtype=torch.float32).eval()
    for text in ["The capital of France is", CHECK_TEXT, "def fibonacci(n):\n    "]:
        ids = loaded.tokenizer.encode(text, add_bos=True)
        n = len(ids)
        ours, _ = loaded.model(jnp.array([ids]), jnp.arange(n)[None], None, jnp.tril(jnp.ones((1, n, n), bool)))
        with torch.no_grad():
            ref = hf(torch.tensor([ids])).logits[0].numpy()
        ours = np.asarray(ours[0])
        assert np.abs(ours - ref).max() < 1e-3, text  # measured: 3e-5 .. 7e-5 against logits up to ~32
        assert (ours.argmax(-1) == ref.argmax(-1)).all()
    prompt_ids = loaded.tokenizer.encode("The capital of France is", add_bos=True)
    text = greedy(loaded, "The capital of France is", 8)
    with torch.no_grad():
        ref = hf.generate(torch.tensor([prompt_ids]), max_new_tokens=8, do_sample=False)[0, len(prompt_ids):]
    assert text == loaded.tokenizer.decode(ref.tolist())
    assert "France" in text or "Paris" in text, text  # measured: " the capital of the country of France."


@pytest.mark.slow
def test_prepare_twice_at_once_converts_once(tmp_path):
    env = {**__import__("os").environ, "COTGEN_CACHE": str(tmp_path)}
    cmd = [sys.executable, "-m", "cotgen.cli", "models", "prepare", "gemma-3-270m"]
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=600)[0].strip() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert outs[0] == outs[1] == str(tmp_path / "gemma-3-270m")
    assert prepare.verify(tmp_path / "gemma-3-270m") is None
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_cotgen_outputs_resolve_as_models_and_count_as_chat_students(tmp_path):
    """Export folders and train/rl/distill run folders are model specs (and trained students prompt in chat);
    other cotgen outputs are refused by name."""
    from cotgen.models import is_base_model, resolve

    orbax = tmp_path / "orbax"
    orbax.mkdir()
    (orbax / "cotgen-model.json").write_text('{"format": "orbax"}')
    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "config.json").write_text("{}")
    (hf / "cotgen-model.json").write_text('{"format": "safetensors"}')
    runs = {}
    for command in ("train", "rl", "distill", "filter"):
        runs[command] = tmp_path / command
        runs[command].mkdir()
        (runs[command] / "config.toml").write_text(f'[cotgen]\ncommand = "{command}"\n')

    assert resolve(str(orbax)).kind == "export"
    assert resolve(str(hf)).kind == "hf"
    for command in ("train", "rl", "distill"):
        source = resolve(str(runs[command]))
        assert (source.kind, source.preset) == ("run", command)
        assert not is_base_model(str(runs[command]))
    with pytest.raises(CotgenError, match="output of `cotgen filter`, not a model"):
        resolve(str(runs["filter"]))
    assert not is_base_model(str(orbax)) and not is_base_model(str(hf))
    assert is_base_model("gemma-3-270m") and is_base_model("tiny:3")


def test_a_full_weight_run_folder_reads_without_lora_alpha(tmp_path):
    """A `lora_rank = 0` run writes no lora_alpha (None values are not written): its folder still names a model;
    a folder lacking a needed field is refused in one line."""
    from cotgen.models.checkpoint import run_model

    (tmp_path / "config.toml").write_text('model = "tiny"\ndtype = "float32"\nlora_rank = 0\n'
                                          'lora_modules = "q"\nseed = 0\n\n[cotgen]\ncommand = "train"\n')
    got = run_model(tmp_path)
    assert (got.model, got.lora_rank, got.lora_alpha, got.qlora) == ("tiny", 0, None, False)
    (tmp_path / "config.toml").write_text('model = "tiny"\n\n[cotgen]\ncommand = "train"\n')
    with pytest.raises(CotgenError, match="lacks dtype, lora_rank, lora_modules, seed"):
        run_model(tmp_path)
