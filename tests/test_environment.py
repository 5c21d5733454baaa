"""The environment the code was written against.

`videor4.train.grpo` replaces and calls private methods of TRL's GRPOTrainer, and
`videor4.policy.rollout` builds transformers' DynamicCache by hand.  These are not public
APIs, so pyproject.toml caps trl and transformers at the tested minor versions and this
test pins the exact signatures: when an upgrade moves one, it fails with one message
naming the installed version and the method, instead of training going wrong silently.
"""

from __future__ import annotations

import inspect
import re
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# (qualified name, its signature as of the tested version)
TRL_PRIVATE = {
    "GRPOTrainer._generate_and_score_completions": (
        "(self, inputs: list[dict[str, torch.Tensor | typing.Any]]) -> dict[str, torch.Tensor | typing.Any]"
    ),
    "GRPOTrainer._get_per_token_logps_and_entropies": (
        "(self, model, input_ids, attention_mask, logits_to_keep, batch_size=None, compute_entropy=False, "
        "compute_aux_loss=False, pixel_values=None, image_grid_thw=None, num_images=None, "
        "pixel_attention_mask=None, spatial_shapes=None, num_tiles=None, image_sizes=None, "
        "token_type_ids=None, mm_token_type_ids=None, "
        "image_position_ids=None) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]"
    ),
    "GRPOTrainer._compute_loss": "(self, model, inputs)",
}
# read by the loss only when generation runs on vLLM, which the rollout engine replaces
ONLY_WITH_VLLM = {"importance_sampling_ratio"}
TRL_TESTED = "1.16"
TRANSFORMERS_TESTED = "5.23"


def _minor(version: str) -> str:
    return ".".join(version.split(".")[:2])


def test_trl_private_methods_grpo_overrides_keep_their_signatures():
    from trl import GRPOTrainer

    version = metadata.version("trl")
    moved = []
    for qualified, expected in TRL_PRIVATE.items():
        method = getattr(GRPOTrainer, qualified.split(".")[1], None)
        found = "missing" if method is None else str(inspect.signature(method))
        if found != expected:
            moved.append(f"{qualified}{found} (tested: {expected})")
    assert not moved, (
        f"TRL {version} changed private methods videor4.train.grpo relies on (tested with TRL {TRL_TESTED}): "
        + "; ".join(moved)
    )


def test_trl_private_names_grpo_uses_still_exist():
    import trl.trainer.grpo_trainer as grpo_module
    from trl import GRPOTrainer

    version = metadata.version("trl")
    assert callable(getattr(grpo_module, "use_adapter", None)), (
        f"TRL {version}: trl.trainer.grpo_trainer.use_adapter is gone"
    )
    assert "self._metrics" in inspect.getsource(GRPOTrainer.__init__), (
        f"TRL {version}: GRPOTrainer no longer keeps self._metrics"
    )


def test_the_loss_reads_only_keys_our_batch_provides():
    """TRL's loss reads the batch `_generate_and_score_completions` returns;
    ours must carry every key it indexes."""
    from trl import GRPOTrainer

    ours = "".join((ROOT / "src/videor4/train" / name).read_text() for name in ("grpo.py", "grpo_trainer.py"))
    needed = (
        set(re.findall(r'inputs\["(\w+)"\]', inspect.getsource(GRPOTrainer._compute_loss))) - ONLY_WITH_VLLM
    )
    missing = sorted(k for k in needed if f'"{k}"' not in ours)
    assert not missing, (
        f"TRL {metadata.version('trl')}: _compute_loss reads {missing}, "
        "which videor4.train.grpo(_trainer) does not provide"
    )


def test_transformers_cache_internals_the_rollout_engine_builds_on():
    from transformers import DynamicCache

    version = metadata.version("transformers")
    assert "ddp_cache_data" in inspect.signature(DynamicCache.__init__).parameters, (
        f"transformers {version}: DynamicCache(ddp_cache_data=...) is gone "
        "(videor4.policy.rollout builds caches with it)"
    )
    assert callable(getattr(DynamicCache, "batch_select_indices", None)), (
        f"transformers {version}: DynamicCache.batch_select_indices is gone"
    )
    cache = DynamicCache()
    assert hasattr(cache, "layers"), f"transformers {version}: DynamicCache has no .layers"


def test_installed_versions_are_the_tested_minors_and_the_lock():
    lock = (ROOT / "requirements.lock").read_text()
    for name, tested in (("trl", TRL_TESTED), ("transformers", TRANSFORMERS_TESTED)):
        installed = metadata.version(name)
        assert _minor(installed) == tested, (
            f"{name} {installed} is installed; the code is tested with {tested}.x"
        )
        assert re.search(rf"^{name}=={re.escape(installed)}\s", lock, re.M), (
            f"{name} {installed} is not the version requirements.lock pins"
        )
    text = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'"trl>=[\d.]+,<1\.17"', text) and re.search(r'"transformers>=[\d.]+,<5\.24"', text), (
        "pyproject.toml must cap trl and transformers"
    )


def test_the_documented_caps_and_locked_versions_are_pyprojects_and_the_locks():
    """docs/DESIGN.md names the caps and the locked versions; they must be the real ones."""
    pyproject = (ROOT / "pyproject.toml").read_text()
    lock = (ROOT / "requirements.lock").read_text()
    design = (ROOT / "docs/DESIGN.md").read_text()
    for name in ("trl", "transformers"):
        cap = re.search(rf'"{name}(>=[\d.]+,<[\d.]+)"', pyproject).group(1)
        locked = re.search(rf"^{name}==([\d.]+)\s", lock, re.M).group(1)
        assert f"`{name}` (`{cap}`)" in design or f"`{name}` (`{cap}`)" in design.replace("\n  ", " "), (
            f"docs/DESIGN.md must give {name}'s cap as pyproject.toml does: {cap}"
        )
        assert f"{name} {locked}" in design.replace("\n  ", " "), (
            f"docs/DESIGN.md must name the locked {name} {locked}"
        )


def test_the_lock_leaves_torch_to_the_set_up_and_pins_everything_else():
    lines = [
        ln.split()[0]
        for ln in (ROOT / "requirements.lock").read_text().splitlines()
        if ln and not ln.startswith("#")
    ]
    assert all("==" in ln for ln in lines), [ln for ln in lines if "==" not in ln]
    names = {ln.split("==")[0] for ln in lines}
    assert "torch" not in names and not any(n.startswith("nvidia-") for n in names)
    assert "torch==2.13.0" in (ROOT / "Makefile").read_text()
