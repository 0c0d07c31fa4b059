"""Which Tunix rollout engine can sample which Gemma family on which platform, asked of the pinned Tunix.

On CPU and GPU, "vllm" is cotgen's own engine (`cotgen.train.vllm_rollout`: one in-process `vllm.LLM`, weights
synced every step), which samples both families. On TPU,
Tunix 0.1.7 (`tunix/rl/rl_cluster.py`) builds "vanilla" (its own JAX sampler, any platform, any nnx LM) itself;
"vllm" and "sglang_jax" go through `VllmRollout` / `SglangJaxRollout`, which import tpu-inference /
sglang-jax (TPU only) and build their weight map with `MappingConfig.build(model=...)`, i.e.
`Model.mapping_for("vllm_jax")`: the `BACKEND_MAPPINGS` of the model's package. Gemma 2 (`tunix.models.gemma`)
and Gemma 3 (`tunix.models.gemma3`) define none in 0.1.7, so those engines raise "vllm_jax mappings not
available for Gemma3" at the first RL step on the TPU. `check` asks the same registry, so a later Tunix that
ships the mappings is accepted without a change here.
"""

from __future__ import annotations

from cotgen.errors import CotgenError
from cotgen.models.load import TUNIX

ENGINES = ("vanilla", "vllm", "sglang_jax")
MAPPING_BACKEND = "vllm_jax"  # what VllmRollout and SglangJaxRollout ask for (MappingConfig's default)


def has_mapping(family: str) -> bool:
    """True when the pinned Tunix ships a vllm_jax weight mapping for `family`."""
    try:
        TUNIX[family].model_class().mapping_for(MAPPING_BACKEND)
    except RuntimeError:
        return False
    return True


def problem(engine: str, family: str, platform: str) -> str | None:
    """None when `engine` can run RL rollouts of a `family` model on `platform` ("cpu" | "gpu" | "tpu");
    otherwise why not and what would work."""
    if engine not in ENGINES:
        return f"unknown rollout engine {engine!r}; known: {', '.join(ENGINES)}"
    if family not in TUNIX:
        return f"unknown model family {family!r}; known: {', '.join(TUNIX)}"
    if engine == "vanilla":
        return None
    if engine == "vllm" and platform in ("cpu", "gpu"):
        return None  # cotgen's own engine (cotgen.train.vllm_rollout): any family vLLM and cotgen's export know
    if platform != "tpu":
        return (f"rollout = {engine!r} runs through sglang-jax, which Tunix supports on TPU only; this target is "
                f"{platform}: use rollout = \"vanilla\" or \"vllm\"")
    if not has_mapping(family):
        tunix = TUNIX[family]
        return (f"rollout = {engine!r}: Tunix's {tunix.class_name} (tunix.models.{tunix.package}.model) has no "
                f"{MAPPING_BACKEND} weight mapping in the pinned Tunix, so its rollout would fail at the first "
                "step (\"vllm_jax mappings not available\"): use rollout = \"vanilla\"")
    return None


def check(engine: str, family: str, platform: str, where: str = "--rollout") -> None:
    why = problem(engine, family, platform)
    if why is not None:
        raise CotgenError(f"{where}: {why}")
