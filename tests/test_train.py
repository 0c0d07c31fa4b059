"""`cotgen train` and `cotgen export` on the tiny Gemma 3: data, packing, training, resume, export, mesh and
errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner

from cotgen import prompts
from cotgen.cli import main
from cotgen.errors import CotgenError, InputError
from cotgen.train import data
from cotgen.train.config import TrainConfig, parse_mesh
from cotgen.train.metrics import read as metrics_read

STEPS = 8


def _rows(n: int, offset: int = 0) -> list[dict]:
    rows = []
    for k in range(offset, offset + n):
        a, b = k, 2 * k + 3
        rows.append({"problem_id": f"p{k}", "question": f"What is {a} + {b}?",
                     "prompt": prompts.student_prompt(f"What is {a} + {b}?"),
                     "completion": prompts.student_target(f"{a} + {b} = {a + b}.", str(a + b))})
    return rows


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    root = tmp_path_factory.mktemp("train-data")
    jsonl = root / "train.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in _rows(12)))
    folder = root / "filtered"
    folder.mkdir()
    pl.DataFrame(_rows(12)).write_parquet(folder / "train.parquet")
    pl.DataFrame(_rows(4, offset=50)).write_parquet(folder / "validation.parquet")
    return {"jsonl": jsonl, "folder": folder, "root": root}


@pytest.fixture(scope="module")
def tiny_tokenizer():
    from cotgen.models.tiny import tokenizer_path
    from cotgen.models.tokenizer import Tokenizer

    return Tokenizer.from_file(tokenizer_path())


def _full_cfg(datasets, out, **kw) -> TrainConfig:
    return TrainConfig(**{**dict(model="tiny", data=datasets["jsonl"], out=out, steps=STEPS, batch_size=2,
                                 max_len=256, lr=3e-3, save_every=2, log_every=4), **kw})


@pytest.fixture(scope="module")
def full_run(datasets, tmp_path_factory):
    from jax._src import monitoring

    from cotgen.train.sft import run

    before = len(monitoring.get_scalar_listeners())
    cfg = _full_cfg(datasets, tmp_path_factory.mktemp("full") / "run")
    state = run(cfg)
    return {"cfg": cfg, "state": state, "listeners": (before, len(monitoring.get_scalar_listeners()))}


@pytest.fixture(scope="module")
def lora_run(datasets, tmp_path_factory):
    from cotgen.train.sft import run

    cfg = TrainConfig(model="tiny", data=datasets["folder"], out=tmp_path_factory.mktemp("lora") / "run",
                      steps=6, batch_size=2, max_len=256, lr=1e-2, lora_rank=4, save_every=3, eval_every=3,
                      tensorboard=False)
    return {"cfg": cfg, "state": run(cfg)}


def _logits(model, ids):
    import jax.numpy as jnp

    n = len(ids)
    out, _ = model(jnp.array([ids]), jnp.arange(n)[None], None, jnp.tril(jnp.ones((1, n, n), bool)))
    return np.asarray(out[0])


# ---------------------------------------------------------------------------------------------------- data
def test_bad_data_is_a_clear_error_naming_file_and_field(tmp_path):
    missing = tmp_path / "missing.parquet"
    pl.DataFrame({"prompt": ["a"], "answer": ["b"]}).write_parquet(missing)
    with pytest.raises(InputError, match=r"missing.parquet: field 'completion': column is missing"):
        data.read_examples(missing)
    typed = tmp_path / "typed.parquet"
    pl.DataFrame({"prompt": ["a"], "completion": [1]}).write_parquet(typed)
    with pytest.raises(InputError, match="field 'completion': has type Int64"):
        data.read_examples(typed)
    nulls = tmp_path / "nulls.parquet"
    pl.DataFrame({"prompt": ["a", None], "completion": ["b", "c"]}).write_parquet(nulls)
    with pytest.raises(InputError, match=r"field 'prompt': 1 empty or null values \(first at row 2\)"):
        data.read_examples(nulls)
    lines = tmp_path / "x.jsonl"
    lines.write_text('{"prompt": "a", "completion": "b"}\n{"prompt": "a"}\n')
    with pytest.raises(InputError, match=r"x.jsonl:2: field 'completion': is missing"):
        data.read_examples(lines)
    lines.write_text('{"prompt": "a", "completion": "b"}\n{"prompt": \n')
    with pytest.raises(InputError, match=r"x.jsonl:2: not valid JSON"):
        data.read_examples(lines)
    with pytest.raises(InputError, match="no train.parquet"):
        data.find_files(tmp_path)
    (tmp_path / "d.csv").write_text("prompt,completion\n")
    with pytest.raises(InputError, match="expected a folder with train.parquet"):
        data.find_files(tmp_path / "d.csv")


def test_cli_bad_schema_exits_2_with_one_line_before_any_compute(tmp_path):
    bad = tmp_path / "bad.parquet"
    pl.DataFrame({"question": ["q"], "completion": ["c"]}).write_parquet(bad)
    code = ("import sys; from cotgen.cli import main\n"
            f"try: main(['train', '--model', 'tiny', '--data', {str(bad)!r},"
            f" '--out', {str(tmp_path / 'o')!r}])"
            "\nexcept SystemExit as e:\n"
            "    print('exit', e.code, [m for m in ('jax', 'tunix') if m in sys.modules])")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "exit 2 []" in res.stdout, res.stdout + res.stderr  # nothing heavy was imported
    assert "bad.parquet: field 'prompt': column is missing" in res.stderr
    assert "Traceback" not in res.stderr and not (tmp_path / "o").exists()


def test_tokenize_masks_the_completion_and_end_of_turn_only(tiny_tokenizer, datasets):
    ex = data.read_examples(datasets["jsonl"])
    eot = tiny_tokenizer.piece_to_id("<end_of_turn>")
    tok = data.tokenize(ex, tiny_tokenizer, eot, max_len=256)
    batch = data.make_batch([[0], [1]], tok, batch_size=3, max_len=256)
    for r in range(2):
        ids, mask = batch["tokens"][r], batch["loss_mask"][r].astype(bool)
        assert ids[0] == tiny_tokenizer.bos_id()
        target = ids[mask]
        assert target[-1] == eot and tiny_tokenizer.decode(target[:-1]) == ex.completions[r]
        n_prompt = tok.n_prompt[r]
        assert tiny_tokenizer.decode(ids[1:n_prompt]) == ex.prompts[r] and not mask[:n_prompt].any()
    assert not batch["loss_mask"][2].any() and not batch["segments"][2].any()  # a padding row
    short = data.tokenize(ex, tiny_tokenizer, eot, max_len=180)  # prompts are ~176 tokens: cut completions
    assert short.n_truncated == len(ex) and all(len(x) == 180 and x[-1] != eot for x in short.ids)
    with pytest.raises(InputError, match="every prompt is at least --max-len 64"):
        data.tokenize(ex, tiny_tokenizer, eot, max_len=64)


def _short_tokenized(tiny_tokenizer, n=24, seed=0):
    rng = np.random.default_rng(seed)
    prompts_, completions = [], []
    for k in range(n):
        a, b = rng.integers(0, 999, size=2)
        prompts_.append(f"Q: {a} + {b}?" + " and" * int(rng.integers(0, 12)))
        completions.append(f"<reasoning>{a} + {b} = {a + b}</reasoning>\n<answer>{a + b}</answer>")
    ex = data.Examples(None, prompts_, completions)
    return data.tokenize(ex, tiny_tokenizer, tiny_tokenizer.piece_to_id("<end_of_turn>"), max_len=96)


def test_plan_is_deterministic_covers_each_epoch_and_packs_within_max_len(tiny_tokenizer):
    tok = _short_tokenized(tiny_tokenizer)
    kw = dict(batch_size=4, max_len=96, seed=3, window=16)
    packed = data.plan(tok.lengths, packing=True, epochs=2, **kw)
    assert packed.batches == data.plan(tok.lengths, packing=True, epochs=2, **kw).batches
    assert packed.batches != data.plan(tok.lengths, packing=True, epochs=2, **{**kw, "seed": 4}).batches
    flat = [i for b in packed.batches for row in b for i in row]
    assert sorted(flat) == sorted(list(range(len(tok.ids))) * 2)  # every example once per epoch
    assert all(sum(tok.lengths[i] for i in row) <= 96 for b in packed.batches for row in b)
    first_epoch = data.epoch_rows(tok.lengths, 0, seed=3, max_len=96, packing=True, window=16)
    assert first_epoch != data.epoch_rows(tok.lengths, 1, seed=3, max_len=96, packing=True, window=16)
    unpacked = data.plan(tok.lengths, packing=False, epochs=2, **kw)
    assert unpacked.steps == 12 and packed.steps < unpacked.steps
    by_steps = data.plan(tok.lengths, packing=False, steps=7, **kw)  # runs on into the second epoch
    assert by_steps.steps == 7 and by_steps.batches[:6] == unpacked.batches[:6]
    assert data.plan(tok.lengths, packing=False, epochs=0.5, **kw).steps == 3
    fill_packed = data.fill(packed, tok, 4, 96)["real_token_fraction"]
    fill_unpacked = data.fill(unpacked, tok, 4, 96)["real_token_fraction"]
    assert fill_packed > 1.5 * fill_unpacked


def test_packed_rows_attend_within_their_example_only(tiny_tokenizer):
    import jax.numpy as jnp

    from cotgen.models.load import load
    from cotgen.train.sft import segment_mask

    tok = _short_tokenized(tiny_tokenizer)
    row = [0, 1, 2]
    width = int(sum(tok.lengths[row])) + 7  # three examples and some padding in one row
    batch = data.make_batch([row, [3]], tok, batch_size=2, max_len=width)
    lengths = [len(tok.ids[i]) for i in row]
    starts = np.cumsum([0, *lengths])
    for (s, e), seg in zip(zip(starts, starts[1:]), (1, 2, 3)):
        assert (batch["positions"][0, s:e] == np.arange(e - s)).all()  # positions restart per example
        assert (batch["segments"][0, s:e] == seg).all()
    assert (batch["segments"][0, starts[-1]:] == 0).all()
    mask = np.asarray(segment_mask(jnp.asarray(batch["segments"])))
    seg = batch["segments"][0]
    for q in range(width):
        for k in range(width):
            assert mask[0, q, k] == (seg[q] > 0 and seg[q] == seg[k] and k <= q)
    # The packed forward gives every example exactly the logits it gets alone.
    model = load("tiny").model
    packed, _ = model(jnp.asarray(batch["tokens"]), jnp.asarray(batch["positions"]), None, jnp.asarray(mask))
    for (s, e), i in zip(zip(starts, starts[1:]), row):
        alone = _logits(model, tok.ids[i].tolist())
        np.testing.assert_allclose(np.asarray(packed[0, s:e]), alone, atol=2e-5)


def test_config_validation():
    assert parse_mesh("fsdp=2") == {"fsdp": 2, "tp": 1}
    assert parse_mesh("fsdp=2,tp=4") == {"fsdp": 2, "tp": 4}
    for bad in ("dp=2", "fsdp=0", "fsdp=x"):
        with pytest.raises(CotgenError, match="--mesh"):
            parse_mesh(bad)
    cfg = TrainConfig(qlora=True)
    assert (cfg.lora_rank, cfg.lora_alpha, cfg.lr, cfg.method) == (16, 32.0, 2e-4, "qlora")
    assert TrainConfig().lr == 2e-5 and TrainConfig().method == "full"
    with pytest.raises(CotgenError, match="--batch-size"):
        TrainConfig(batch_size=0)


# -------------------------------------------------------------------------------------------------- training
def test_full_training_loss_falls_params_change_and_metrics_are_written(full_run):
    from cotgen.models.load import load
    from cotgen.models.lora import flat_params
    from cotgen.runs import model_from_run

    cfg, state = full_run["cfg"], full_run["state"]
    rows = metrics_read(cfg.out / "metrics.jsonl")
    losses = [r["loss"] for r in rows if r["mode"] == "train"]
    assert [r["step"] for r in rows] == list(range(1, STEPS + 1))
    assert all(np.isfinite(losses)) and losses[-1] < losses[0] - 0.5
    for key in ("grad_norm", "lr", "tokens_per_s", "step_time_s", "real_tokens", "loss_tokens"):
        assert all(key in r for r in rows), key
    assert rows[0]["lr"] == pytest.approx(3e-3) and rows[-1]["lr"] < rows[0]["lr"]  # cosine decay
    assert (cfg.out / "loss.png").read_bytes()[:4] == b"\x89PNG"
    assert state["status"] == "done" and state["final_step"] == STEPS
    assert state["fill"]["packed"]["real_token_fraction"] > 0
    assert (cfg.out / "config.toml").is_file()
    assert sorted(p.name for p in (cfg.out / "checkpoints").iterdir()) == ["4", "6", "8"]
    before, after = full_run["listeners"]
    assert before == after  # the metrics backends were unregistered
    tags = _tensorboard_tags(cfg.out / "tensorboard")
    assert "sft/train/loss" in tags and not any("jax" in t for t in tags)
    trained = flat_params(model_from_run(cfg.out)[0])
    base = flat_params(load("tiny").model)
    assert all(not np.allclose(trained[k], base[k]) for k in base if "mlp" in k or "einsum" in k)


def _tensorboard_tags(folder) -> set[str]:
    import struct

    from tensorboardX.proto import event_pb2

    tags = set()
    for path in folder.glob("events*"):
        raw, i = path.read_bytes(), 0
        while i < len(raw):
            n = struct.unpack("<Q", raw[i:i + 8])[0]
            event = event_pb2.Event()
            event.ParseFromString(raw[i + 12:i + 12 + n])
            tags |= {v.tag for v in event.summary.value}
            i += 16 + n
    return tags


def test_lora_trains_only_the_adapters_and_evaluates(lora_run):
    from flax import nnx

    from cotgen.models.load import load
    from cotgen.models.lora import flat_params
    from cotgen.runs import model_from_run

    cfg, state = lora_run["cfg"], lora_run["state"]
    model, _, _, step = model_from_run(cfg.out)
    assert step == 6
    base = flat_params(load("tiny").model)
    trained = flat_params(model)
    assert trained.keys() == base.keys()
    for key in base:
        np.testing.assert_array_equal(trained[key], base[key])
    lora_b = [np.asarray(v[...]) for path, v in nnx.to_flat_state(nnx.state(model, nnx.LoRAParam))
              if str(path[-1]).endswith("_lora_b")]
    assert len(lora_b) == 2 * 6 and all(np.abs(b).max() > 0 for b in lora_b)  # B starts at zero
    rows = metrics_read(cfg.out / "metrics.jsonl")
    evals = [r for r in rows if r["mode"] == "eval"]
    assert [r["step"] for r in evals] == [0, 3, 6] and evals[-1]["loss"] < evals[0]["loss"]
    assert state["last_loss"] < state["first_loss"] and state["examples"]["validation"] == 4


def test_qlora_through_the_cli(datasets, tmp_path):
    from flax import nnx

    from cotgen.runs import model_from_run

    out = tmp_path / "qlora"
    res = CliRunner().invoke(main, ["train", "--model", "tiny", "--data", str(datasets["jsonl"]),
                                    "--out", str(out), "--qlora", "--lora-rank", "4", "--steps", "3",
                                    "--batch-size", "2",
                                    "--max-len", "256", "--lr", "1e-2", "--no-tensorboard"])
    assert res.exit_code == 0, res.output
    assert "qlora SFT of tiny: 3 steps" in res.output
    state = json.loads((out / "run.json").read_text())
    assert np.isfinite(state["last_loss"]) and state["last_loss"] != state["first_loss"]
    model = model_from_run(out)[0]
    dtypes = {str(v[...].dtype) for _, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}
    assert "uint4" in dtypes  # the frozen base is stored in 4 bits


# ---------------------------------------------------------------------------------------------------- resume
def test_resume_after_a_kill_ends_at_the_same_weights(full_run, datasets, tmp_path):
    from cotgen.models.lora import flat_params
    from cotgen.runs import model_from_run
    from cotgen.train.sft import run

    out = tmp_path / "killed"
    cfg = _full_cfg(datasets, out)
    # The kill lands while orbax writes step 6's checkpoint in the background: its save call has returned, its
    # files sit in a temporary folder, and the commit (the rename to checkpoints/6) is held back, so the kill
    # always falls inside the asynchronous write.
    script = textwrap.dedent(f"""
        import asyncio, os, signal
        from orbax.checkpoint._src.path import atomicity
        from cotgen.train.config import TrainConfig
        from cotgen.train.sft import run

        commit = atomicity.AtomicRenameTemporaryPath.finalize

        async def held_commit(self):
            if self._final_path.name == "6":
                await asyncio.sleep(600)
            return await commit(self)

        atomicity.AtomicRenameTemporaryPath.finalize = held_commit

        def kill_in_save(trainer, step):
            if step != 1:
                return
            manager = trainer.checkpoint_manager._checkpoint_manager
            save = manager.save

            def save_then_kill(step, *args, **kwargs):
                started = save(step, *args, **kwargs)
                if step == 6:
                    print("saving", started, manager.is_saving_in_progress(), flush=True)
                    os.kill(os.getpid(), signal.SIGKILL)
                return started

            manager.save = save_then_kill

        run(TrainConfig(model="tiny", data={str(cfg.data)!r}, out={str(out)!r}, steps={STEPS}, batch_size=2,
                        max_len=256, lr=3e-3, save_every=2, log_every=4), callbacks=[kill_in_save])
    """)
    killed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert "saving True True" in killed.stdout, killed.stdout  # killed with step 6's write in flight
    folders = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert max(int(f) for f in folders if f.isdigit()) == 4, folders  # complete checkpoints: up to 4
    assert any(f.startswith("6.") for f in folders), folders  # step 6's unfinished write

    with pytest.raises(CotgenError, match="already holds a training run; pass --resume"):
        run(cfg)
    with pytest.raises(CotgenError, match=r"another config \(lr: 0.003 -> 0.001\)"):
        run(_full_cfg(datasets, out, lr=1e-3, resume=True))
    other = tmp_path / "other.jsonl"
    other.write_text("".join(json.dumps(r) + "\n" for r in _rows(12, offset=1)))
    with pytest.raises(CotgenError, match="the data differs"):
        run(_full_cfg(datasets, out, data=other, resume=True))

    state = run(_full_cfg(datasets, out, resume=True))
    assert state["resumed_from"] == 4 and state["final_step"] == STEPS
    rows = metrics_read(out / "metrics.jsonl")
    assert [r["step"] for r in rows] == list(range(1, STEPS + 1))  # no step logged twice, none lost
    straight_rows = [r for r in metrics_read(full_run["cfg"].out / "metrics.jsonl") if r["mode"] == "train"]
    assert [r["loss"] for r in rows] == pytest.approx([r["loss"] for r in straight_rows], rel=1e-5)
    resumed = flat_params(model_from_run(out)[0])
    straight = flat_params(model_from_run(full_run["cfg"].out)[0])
    for key in straight:
        np.testing.assert_allclose(resumed[key], straight[key], rtol=1e-5, atol=1e-6, err_msg=key)
    assert state["last_loss"] == pytest.approx(full_run["state"]["last_loss"], rel=1e-5)


def test_out_folder_with_other_content_is_refused(datasets, tmp_path):
    from cotgen.train.sft import run

    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(CotgenError, match="not empty and holds no cotgen train run"):
        run(_full_cfg(datasets, tmp_path))


def test_model_whose_vocabulary_does_not_match_its_tokenizer(full_run, datasets, tmp_path):
    from cotgen.train.export import export
    from cotgen.train.sft import run

    folder = tmp_path / "exported"
    export(full_run["cfg"].out, "safetensors", folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "vocab_size": 300}))
    with pytest.raises(CotgenError, match="do not belong together"):
        run(_full_cfg(datasets, tmp_path / "run", model=str(folder)))


# ---------------------------------------------------------------------------------------------------- export
def test_export_lora_merged_round_trips_in_both_formats(lora_run, tmp_path):
    from cotgen.models.load import load, load_export
    from cotgen.runs import model_from_run

    run_dir = lora_run["cfg"].out
    model, loaded, _, _ = model_from_run(run_dir)
    ids = loaded.tokenizer.encode("<reasoning>12 + 30 = 42</reasoning>\n<answer>42</answer>", add_bos=True)
    want = _logits(model, ids)
    assert np.abs(want - _logits(loaded.model, ids)).max() > 1e-3  # the adapters matter

    out = tmp_path / "hf"
    res = CliRunner().invoke(main, ["export", str(run_dir), "--format", "safetensors", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert {"config.json", "model.safetensors", "tokenizer.model", "cotgen-model.json"} <= {
        p.name for p in out.iterdir()}
    np.testing.assert_allclose(_logits(load(str(out)).model, ids), want, atol=1e-5)

    orbax_out = tmp_path / "orbax"
    res = CliRunner().invoke(main, ["export", str(run_dir / "checkpoints" / "6"), "--format", "orbax",
                                    "--out", str(orbax_out)])
    assert res.exit_code == 0, res.output
    manifest = json.loads((orbax_out / "cotgen-model.json").read_text())
    assert manifest["format"] == "orbax" and manifest["method"] == "lora" and manifest["step"] == 6
    np.testing.assert_allclose(_logits(load_export(orbax_out).model, ids), want, atol=1e-5)
    # the one resolver takes all three as model specs: the run folder (merged), and both exports
    for spec in (run_dir, orbax_out, out):
        np.testing.assert_allclose(_logits(load(str(spec)).model, ids), want, atol=1e-5)

    res = CliRunner().invoke(main, ["export", str(run_dir), "--out", str(out)])
    assert res.exit_code == 2 and "exists and is not empty" in res.output
    res = CliRunner().invoke(main, ["export", str(tmp_path), "--out", str(tmp_path / "x")])
    assert res.exit_code == 2 and "neither a `cotgen train | rl | distill` output folder" in res.output


def test_full_weight_export_loads_in_transformers_with_the_same_logits(full_run, tmp_path):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from cotgen.runs import model_from_run
    from cotgen.train.export import export

    out = tmp_path / "hf"
    export(full_run["cfg"].out, "safetensors", out)
    model, loaded, _, _ = model_from_run(full_run["cfg"].out)
    ids = loaded.tokenizer.encode(prompts.student_prompt("What is 4 + 11?"), add_bos=True)[:40]  # > window 16
    want = _logits(model, ids)
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.float32)
    with torch.no_grad():
        got = hf(torch.tensor([ids])).logits[0].numpy()
    np.testing.assert_allclose(got, want, atol=1e-4)


# ---------------------------------------------------------------------------------------------------- mesh
def test_fsdp_and_tensor_parallel_meshes_match_one_device(full_run, tmp_path):
    from cotgen.train.export import export

    folder = tmp_path / "base"
    export(full_run["cfg"].out, "safetensors", folder)  # fixed weights: random init differs under a mesh
    script = textwrap.dedent(f"""
        import json
        from cotgen.train.config import TrainConfig
        from cotgen.train.sft import run

        losses = {{}}
        for mesh in (None, "fsdp=2", "tp=2"):
            state = run(TrainConfig(model={str(folder)!r}, data={str(full_run["cfg"].data)!r},
                                    out={str(tmp_path)!r} + f"/run-{{mesh}}", steps=2, batch_size=2,
                                    max_len=256, lr=3e-3, mesh=mesh, tensorboard=False))
            losses[str(mesh)] = [state["first_loss"], state["last_loss"], state["devices"],
                                 state["sharded_arrays"]]
        print("LOSSES", json.dumps(losses))
    """)
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    losses = json.loads(res.stdout.split("LOSSES", 1)[1])
    assert len(losses["None"][2]) == 2 and losses["None"][3] == 0
    for mesh in ("fsdp=2", "tp=2"):
        assert losses[mesh][3] > 0  # weights (and optimizer state) are split over the two devices
        np.testing.assert_allclose(losses[mesh][:2], losses["None"][:2], rtol=1e-4, err_msg=mesh)
    with pytest.raises(CotgenError, match="needs 4 devices"):
        from cotgen.train.sft import make_mesh

        make_mesh("fsdp=2,tp=2")


def test_cli_train_help_is_light():
    code = ("import sys; from cotgen.cli import main\n"
            "try: main(['train', '--help'])\nexcept SystemExit: pass\n"
            "print([m for m in ('jax', 'tunix', 'polars') if m in sys.modules])")
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "--lora-rank" in out and "--resume" in out and out.strip().endswith("[]")
    assert time.perf_counter() - start < 20


@pytest.mark.parametrize("spec", ["tiny", "tiny-gemma2"])
def test_selected_logits_are_the_full_forward_pass_at_those_positions(spec):
    """`sft.predicted_logits` with a batch's `select` decodes only its K positions (Gemma 2's soft-cap
    included) and gives the full forward pass's logits there; the loss is the same either way."""
    import jax.numpy as jnp

    from cotgen.models.load import load
    from cotgen.train import sft

    loaded = load(spec)
    tok = data.tokenize(data.Examples(Path("x.jsonl"), ["What is 2 + 3?", "Add 1 and 1.", "Name a prime."],
                                      ["2 + 3 = 5. <answer>5</answer>", "2", "7 is prime"]),
                        loaded.tokenizer, 106, 64)
    batch = data.make_batch([[0, 1], [2]], tok, 3, 64, targets=16)
    assert batch["select"].shape == (3, 16) and batch["select_mask"][2].sum() == 0
    inputs = sft.model_inputs({k: jnp.asarray(v) for k, v in batch.items()})
    args = (loaded.model, inputs["input_tokens"], inputs["positions"], inputs["attention_mask"])
    full = np.asarray(sft.predicted_logits(*args))  # (B, L-1, V)
    picked = np.asarray(sft.predicted_logits(*args, inputs["select"]))  # (B, K, V)
    b, k = np.nonzero(batch["select_mask"])
    np.testing.assert_allclose(picked[b, k], full[b, batch["select"][b, k]], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(batch["targets"][b, k], batch["tokens"][b, batch["select"][b, k] + 1])
    plain = {k: v for k, v in inputs.items() if k not in ("select", "select_mask", "targets")}
    assert float(sft.loss_fn(loaded.model, **inputs)) == pytest.approx(float(sft.loss_fn(loaded.model, **plain)),
                                                                        rel=1e-5)
