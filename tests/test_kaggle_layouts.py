"""Kaggle Models layouts load by plain path: the "flax" variants (a version folder with `tokenizer.model` and a
checkpoint folder named after the model, or that checkpoint folder itself) and the "transformers" variants (HF
folders, sharded safetensors included), built here from the tiny Gemma 3 and Gemma 2; bad input is one line."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from cotgen.errors import CotgenError
from cotgen.models import family, resolve

SPECS = {"tiny": "gemma-3", "tiny-gemma2": "gemma-2"}  # spec -> Kaggle model folder


def _logits(model, ids):
    import jax.numpy as jnp

    n = len(ids)
    out, _ = model(jnp.array([ids]), jnp.arange(n)[None], None, jnp.tril(jnp.ones((1, n, n), bool)))
    return np.asarray(out[0])


def _flax_layout(root, spec, loaded):
    """/kaggle/input/gemma-2/flax/tiny-gemma2/1/{tiny-gemma2/, tokenizer.model}, the checkpoint in the upstream
    layout written by cotgen's orbax export."""
    from cotgen.models.lora import flat_params
    from cotgen.models.tiny import tokenizer_path
    from cotgen.train.export import save_upstream

    version = root / SPECS[spec] / "flax" / spec / "1"
    version.mkdir(parents=True)
    save_upstream(flat_params(loaded.model), version / spec, loaded.family)
    shutil.copy(tokenizer_path(), version / "tokenizer.model")
    return version


def _sharded_layout(root, spec):
    """/kaggle/input/gemma-2/transformers/tiny-gemma2/1/: config.json, two safetensors shards and their index,
    tokenizer files, generation_config.json."""
    from safetensors.numpy import load_file, save_file

    from cotgen.models.tiny import hf_folder

    src, folder = hf_folder(spec), root / SPECS[spec] / "transformers" / spec / "1"
    folder.mkdir(parents=True)
    for name in ("config.json", "tokenizer.json", "tokenizer.model", "tokenizer_config.json"):
        shutil.copy(src / name, folder / name)
    (folder / "generation_config.json").write_text(json.dumps({"bos_token_id": 2, "eos_token_id": [1, 5]}))
    tensors = load_file(str(src / "model.safetensors"))
    names = sorted(tensors)
    weight_map = {}
    for i, part in enumerate((names[::2], names[1::2])):
        file = f"model-0000{i + 1}-of-00002.safetensors"
        save_file({n: tensors[n] for n in part}, str(folder / file), metadata={"format": "pt"})
        weight_map.update({n: file for n in part})
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return folder


@pytest.fixture(scope="module")
def layouts(tmp_path_factory):
    from cotgen.models.load import load

    root = tmp_path_factory.mktemp("kaggle") / "input"
    out = {}
    for spec in SPECS:
        loaded = load(spec)
        ids = loaded.tokenizer.encode("<start_of_turn>user\nWhat is 12 * 7?<end_of_turn>\n" * 2, add_bos=True)
        out[spec] = {"flax": _flax_layout(root, spec, loaded), "transformers": _sharded_layout(root, spec),
                     "ids": ids, "want": _logits(loaded.model, ids)}
    return out


def test_resolver_finds_kaggle_flax_checkpoints_without_jax(tmp_path):
    version = tmp_path / "gemma-2" / "flax" / "gemma2-2b-it" / "1"
    (version / "gemma2-2b-it" / "d").mkdir(parents=True)
    for marker in ("_METADATA", "manifest.ocdbt"):
        (version / "gemma2-2b-it" / marker).write_text("")
    (version / "tokenizer.model").write_text("")
    for path in (version, version / "gemma2-2b-it"):
        source = resolve(str(path))
        assert (source.kind, source.path, source.preset) == ("orbax", version / "gemma2-2b-it", "gemma2_2b_it")
        assert family(str(path)) == "gemma2"
    assert resolve(f"orbax:gemma2_2b_it:{version}").path == version / "gemma2-2b-it"
    g3 = tmp_path / "gemma3-1b-it"
    g3.mkdir()
    (g3 / "_METADATA").write_text("")
    assert resolve(str(g3)).preset == "gemma3_1b_it" and family(str(g3)) == "gemma3"
    shutil.copytree(version / "gemma2-2b-it", version / "gemma2-9b-it")
    with pytest.raises(CotgenError, match="several orbax checkpoints .*gemma2-2b-it, gemma2-9b-it.*pass the one"):
        resolve(str(version))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CotgenError, match=f"model folder {empty} has no config.json and no orbax checkpoint"):
        resolve(str(empty))


@pytest.mark.parametrize("spec", list(SPECS))
def test_kaggle_flax_layout_loads_by_path(layouts, spec):
    from cotgen.models.load import load

    version, want, ids = layouts[spec]["flax"], layouts[spec]["want"], layouts[spec]["ids"]
    for path in (version, version / spec):  # the version folder or the checkpoint folder itself
        loaded = load(str(path))
        assert loaded.source.kind == "orbax" and loaded.family == family(spec) == family(str(path))
        np.testing.assert_allclose(_logits(loaded.model, ids), want, atol=1e-6, err_msg=str(path))


@pytest.mark.parametrize("spec", list(SPECS))
def test_kaggle_transformers_layout_with_sharded_safetensors_loads(layouts, spec):
    from cotgen.models.load import load

    folder = layouts[spec]["transformers"]
    assert len(list(folder.glob("model-*-of-00002.safetensors"))) == 2
    loaded = load(str(folder))
    assert loaded.family == family(spec) == family(str(folder))
    np.testing.assert_allclose(_logits(loaded.model, layouts[spec]["ids"]), layouts[spec]["want"], atol=1e-6)


def test_bad_kaggle_input_is_one_line_naming_path_and_fix(layouts, tmp_path):
    from cotgen.models.load import load

    ckpt = layouts["tiny-gemma2"]["flax"] / "tiny-gemma2"
    errors = []

    mystery = tmp_path / "mystery" / "1"
    shutil.copytree(ckpt, mystery / "mystery-7b")
    shutil.copy(ckpt.parent / "tokenizer.model", mystery)
    with pytest.raises(CotgenError) as err:
        load(str(mystery))
    errors.append(str(err.value))
    assert f"{mystery / 'mystery-7b'}" in errors[-1] and "'mystery_7b'" in errors[-1]
    assert "gemma2_2b_it" in errors[-1] and "gemma3_1b_it" in errors[-1] and "orbax:PRESET:PATH" in errors[-1]

    wrong = tmp_path / "wrong" / "1"  # a tiny checkpoint under a real model's name
    shutil.copytree(ckpt, wrong / "gemma2-2b-it")
    shutil.copy(ckpt.parent / "tokenizer.model", wrong)
    with pytest.raises(CotgenError, match=r"2 layers and a 512x64 embedding, but preset 'gemma2_2b_it' has 26 "
                                          r"layers and 256128x2304") as err:
        load(str(wrong))
    errors.append(str(err.value))

    bare = tmp_path / "bare" / "1"  # a Gemma 2 checkpoint without its tokenizer
    shutil.copytree(ckpt, bare / "tiny-gemma2")
    with pytest.raises(CotgenError, match=r"no tokenizer.model or tokenizer.json .*Gemma 2 tokenizer") as err:
        load(str(bare))
    errors.append(str(err.value))

    hf = tmp_path / "hf"
    shutil.copytree(layouts["tiny-gemma2"]["transformers"], hf)
    for name in ("tokenizer.json", "tokenizer.model"):
        (hf / name).unlink()
    with pytest.raises(CotgenError, match=f"{hf}: no tokenizer.model or tokenizer.json") as err:
        load(str(hf))
    errors.append(str(err.value))
    config = json.loads((hf / "config.json").read_text())
    (hf / "config.json").write_text(json.dumps({**config, "model_type": "llama"}))
    with pytest.raises(CotgenError, match=f"{hf}/config.json: model_type 'llama' is not Gemma 3 or Gemma 2") as err:
        load(str(hf))
    errors.append(str(err.value))
    assert all("\n" not in e for e in errors)
