"""The model that writes reasoning text for synthesized trajectories (`data.cot.writer: model`).

The prompts, the rules a written thought must pass and the rewriting live in
`videor4.data.writer`; this is only the model behind `ThoughtWriter`, kept in the policy layer
because loading a checkpoint is the policy's business (Qwen2-VL / Qwen2.5-VL checkpoints load
through `policy.model.load_policy`, as the project's policies do).  Stage build_data builds it
when the params ask for it and hands it to the data build.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from videor4.core.io import folder_fingerprint
from videor4.data.writer import WriterConfig

if TYPE_CHECKING:
    from videor4.data.build import DataParams


class ModelThoughtWriter:
    """Any HF chat model writing thoughts: loaded on first use, batched, left-padded, deterministic.

    Qwen2-VL / Qwen2.5-VL checkpoints (the project's policies) load through the project's own
    `policy.model.load_policy`; other checkpoints as a causal LM, or, when transformers has no
    causal-LM class for them, as an image-text-to-text model (prompts stay text only).
    `calls` counts generate() calls and `generated` the prompts generated, so a caller (or test)
    can see that a cached run generated nothing.
    """

    def __init__(self, cfg: WriterConfig):
        if not cfg.name_or_path:
            raise ValueError("data.cot: the model writer needs name_or_path (a checkpoint folder or Hub id)")
        self.cfg = cfg
        self.calls = 0
        self.generated = 0
        self._model: Any = None
        self._tokenizer: Any = None
        self._device: str | None = None
        self._id: str | None = None

    @property
    def writer_id(self) -> str:
        """The checkpoint (by content for a local folder) and the settings that change the output."""
        if self._id is None:
            from videor4.policy.model import resolve

            source, revision = resolve(self.cfg.name_or_path)
            ident: dict[str, Any] = {"model": source, "revision": revision}
            if Path(source).is_dir():
                ident = {"fingerprint": folder_fingerprint(source)}
            ident.update(
                max_new_tokens=self.cfg.max_new_tokens,
                temperature=self.cfg.temperature,
                seed=self.cfg.seed if self.cfg.temperature > 0 else None,
            )
            self._id = json.dumps(ident, sort_keys=True)
        return self._id

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def _load(self) -> None:
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText, AutoTokenizer

        from videor4.policy.model import PAD_TOKEN, load_policy, resolve, torch_dtype

        device = self.cfg.device or ("cuda" if torch.cuda.is_available() else "cpu")
        source, revision = resolve(self.cfg.name_or_path)
        config = AutoConfig.from_pretrained(source, revision=revision)
        if config.model_type in ("qwen2_vl", "qwen2_5_vl"):
            policy = load_policy(self.cfg.name_or_path, dtype=self.cfg.dtype, device=device)
            model, tokenizer = policy.model, policy.tokenizer
        else:
            dtype = torch_dtype(self.cfg.dtype, device)
            tokenizer = AutoTokenizer.from_pretrained(source, revision=revision)
            try:
                model = AutoModelForCausalLM.from_pretrained(source, revision=revision, dtype=dtype)
            except ValueError:  # "Unrecognized configuration class": a vision-language checkpoint
                model = AutoModelForImageTextToText.from_pretrained(source, revision=revision, dtype=dtype)
            if not getattr(tokenizer, "chat_template", None):  # some keep it with the processor
                from transformers import AutoProcessor

                tokenizer.chat_template = getattr(
                    AutoProcessor.from_pretrained(source, revision=revision), "chat_template", None
                )
            if tokenizer.pad_token is None:
                tokenizer.pad_token = PAD_TOKEN if PAD_TOKEN in tokenizer.get_vocab() else tokenizer.eos_token
            model.to(device)
        tokenizer.padding_side = "left"  # generated tokens follow every prompt directly
        model.eval()
        self._model, self._tokenizer, self._device = model, tokenizer, device

    def _render(self, messages: list[dict[str, Any]]) -> str:
        try:
            return self._tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        except Exception:  # noqa: BLE001 - templates without a system role (jinja raises): fold it into the user turn
            system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
            rest = [dict(m) for m in messages if m["role"] != "system"]
            if system and rest:
                rest[0]["content"] = f"{system}\n\n{rest[0]['content']}"
            return self._tokenizer.apply_chat_template(rest, tokenize=False, add_generation_prompt=True)

    def write(self, prompts: list[list[dict[str, Any]]]) -> list[str]:
        """Generate one text per prompt, `batch_size` at a time (greedy when temperature is 0)."""
        if not prompts:
            return []
        import torch

        if self._model is None:
            self._load()
        tok, model = self._tokenizer, self._model
        gen = model.generation_config.__class__.from_dict(model.generation_config.to_dict())
        gen.max_new_tokens = self.cfg.max_new_tokens
        gen.pad_token_id = tok.pad_token_id
        if self.cfg.temperature > 0:
            gen.do_sample, gen.temperature = True, self.cfg.temperature
        else:
            gen.do_sample, gen.temperature, gen.top_p, gen.top_k = False, None, None, None
        out: list[str] = []
        for start in range(0, len(prompts), self.cfg.batch_size):
            batch = prompts[start : start + self.cfg.batch_size]
            texts = [self._render(m) for m in batch]
            enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(self._device)
            if (
                self.cfg.temperature > 0
            ):  # seeded by the batch's content: the same batch samples the same text
                digest = hashlib.sha256("\n".join(texts).encode()).digest()
                torch.manual_seed(self.cfg.seed ^ int.from_bytes(digest[:4], "big"))
            with torch.no_grad():
                ids = model.generate(**enc, generation_config=gen)
            self.calls += 1
            self.generated += len(batch)
            out += tok.batch_decode(ids[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
        return out


def thought_writer(data: DataParams, cfg: WriterConfig) -> ModelThoughtWriter | None:
    """The writer `data.cot` asks for (`cfg` from `build_config`), or None for template thoughts."""
    return ModelThoughtWriter(cfg) if data.cot.writer == "model" else None
