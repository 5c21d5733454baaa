"""Chat messages → model inputs, one implementation for SFT, RL and eval.

A conversation (system → user(frames + question) → assistant → tool(text +
images) → … → assistant `\\boxed{}`) is rendered with the tokenizer's own chat
template, one message at a time, so every token is known to belong to a turn.
Only assistant tokens (their text and the end-of-turn token) carry labels; the
prompt, tool observations and image placeholders are masked with -100 but stay
in the forward pass.  Each image placeholder is expanded to the number of
visual tokens the image processor produces for that image, and
`mm_token_type_ids` marks them (without it Qwen2-VL's multimodal RoPE is
silently skipped).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image

from videor4.policy.model import END_OF_TURN, IMAGE_TOKEN

if TYPE_CHECKING:
    import torch

IGNORE_INDEX = -100
IMAGE_TYPE_ID = 1  # mm_token_type_ids: 0 text, 1 image, 2 video


class EncodingError(ValueError):
    """A conversation that cannot be encoded (missing image, template mismatch, too long)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


@dataclass
class Encoded:
    """One conversation as token ids, labels and its images' pixels."""

    input_ids: list[int]
    labels: list[int]
    pixel_values: Any = None  # (num_patches, C*T*P*P) tensor, or None without images
    image_grid_thw: Any = None  # (num_images, 3)
    num_images: int = 0
    turn_spans: list[tuple[int, int]] = field(default_factory=list)  # [start, end) of each assistant turn

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def num_loss_tokens(self) -> int:
        return sum(1 for label in self.labels if label != IGNORE_INDEX)


def load_image(image: Any) -> Image.Image:
    """A PIL image from a PIL image or a path; a missing file is an EncodingError."""
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    path = Path(os.fspath(image))
    if not path.is_file():
        raise EncodingError("missing_image", f"image {path} does not exist")
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except OSError as exc:
        raise EncodingError("unreadable_image", f"image {path}: {exc}") from exc


def message_images(messages: Sequence[dict[str, Any]]) -> list[Any]:
    """Image parts in the order the chat template renders them."""
    images = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, list):
            for part in content:
                if part.get("type") == "image" or "image" in part:
                    images.append(part.get("image"))
    return images


class PolicyEncoder:
    """Turns chat messages into model inputs for one policy (tokenizer + image processor)."""

    def __init__(self, tokenizer, image_processor, max_length: int | None = None) -> None:
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError("the tokenizer has no chat template")
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.max_length = max_length
        self.image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
        self.end_of_turn_id = tokenizer.convert_tokens_to_ids(END_OF_TURN)
        self.pad_token_id = (
            tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.end_of_turn_id
        )
        self.merge_length = int(getattr(image_processor, "merge_size", 2)) ** 2

    # ------------------------------------------------------------ pieces
    def render(self, messages: Sequence[dict[str, Any]], add_generation_prompt: bool = False) -> str:
        return self.tokenizer.apply_chat_template(
            list(messages), tokenize=False, add_generation_prompt=add_generation_prompt
        )

    def process_images(self, images: Sequence[Any]) -> tuple[Any, Any, list[int]]:
        """(pixel_values, image_grid_thw, visual tokens per image)."""
        if not images:
            return None, None, []
        pil = [load_image(img) for img in images]
        out = self.image_processor(images=pil, return_tensors="pt")
        grid = out["image_grid_thw"]
        counts = [int(g.prod()) // self.merge_length for g in grid]
        return out["pixel_values"], grid, counts

    def tokenize(self, text: str, image_token_counts: Sequence[int] = ()) -> list[int]:
        """Token ids of rendered text whose image placeholders are expanded to the given counts."""
        pieces = text.split(IMAGE_TOKEN)
        if len(pieces) - 1 != len(image_token_counts):
            raise EncodingError(
                "image_mismatch", f"{len(pieces) - 1} image placeholders but {len(image_token_counts)} images"
            )
        expanded = pieces[0]
        for count, piece in zip(image_token_counts, pieces[1:]):
            expanded += IMAGE_TOKEN * count + piece
        return self.tokenizer(expanded, add_special_tokens=False)["input_ids"]

    # ------------------------------------------------------------ conversations
    def encode(self, messages: Sequence[dict[str, Any]], train: bool = True) -> Encoded:
        """Encode a whole conversation; labels on assistant turns when `train`."""
        messages = list(messages)
        pixel_values, grid, counts = self.process_images(message_images(messages))
        ids: list[int] = []
        labels: list[int] = []
        spans: list[tuple[int, int]] = []
        rendered = ""
        used_images = 0

        def add(text: str, trainable: bool) -> None:
            nonlocal used_images
            n = text.count(IMAGE_TOKEN)
            piece = self.tokenize(text, counts[used_images : used_images + n])
            used_images += n
            ids.extend(piece)
            labels.extend(piece if trainable else [IGNORE_INDEX] * len(piece))

        for k, message in enumerate(messages):
            if message.get("role") == "assistant":
                head = self._extend(rendered, self.render(messages[:k], add_generation_prompt=True))
                add(head, False)
                rendered += head
            full = self.render(messages[: k + 1])
            body = self._extend(rendered, full)
            if message.get("role") == "assistant":
                # the turn's text and its end-of-turn token are learned; what the template adds after is not
                cut = body.find(END_OF_TURN)
                cut = len(body) if cut == -1 else cut + len(END_OF_TURN)
                start = len(ids)
                add(body[:cut], train)
                spans.append((start, len(ids)))
                if body[cut:]:
                    add(body[cut:], False)
            else:
                add(body, False)
            rendered = full
        if used_images != len(counts):
            raise EncodingError(
                "image_mismatch", f"the template rendered {used_images} of {len(counts)} images"
            )
        if self.max_length is not None and len(ids) > self.max_length:
            raise EncodingError("too_long", f"{len(ids)} tokens > max_length {self.max_length}")
        return Encoded(ids, labels, pixel_values, grid, len(counts), spans)

    def encode_prompt(self, messages: Sequence[dict[str, Any]]) -> Encoded:
        """A conversation so far plus the assistant generation prompt (no labels)."""
        messages = list(messages)
        pixel_values, grid, counts = self.process_images(message_images(messages))
        ids = self.tokenize(self.render(messages, add_generation_prompt=True), counts)
        return Encoded(ids, [IGNORE_INDEX] * len(ids), pixel_values, grid, len(counts))

    @staticmethod
    def _extend(rendered: str, longer: str) -> str:
        if not longer.startswith(rendered):
            raise EncodingError(
                "template", "the chat template is not prefix-stable (rendering a turn changed earlier text)"
            )
        return longer[len(rendered) :]

    # ------------------------------------------------------------ batches
    def collate(self, batch: Sequence[Encoded], padding_side: str = "right") -> dict[str, "torch.Tensor"]:
        """Pad a batch; pixel values of all images are concatenated in order."""
        import torch

        width = max(len(e) for e in batch)
        input_ids = torch.full((len(batch), width), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
        attention = torch.zeros((len(batch), width), dtype=torch.long)
        for row, e in enumerate(batch):
            n = len(e)
            cols = slice(0, n) if padding_side == "right" else slice(width - n, width)
            input_ids[row, cols] = torch.tensor(e.input_ids, dtype=torch.long)
            labels[row, cols] = torch.tensor(e.labels, dtype=torch.long)
            attention[row, cols] = 1
        out = {
            "input_ids": input_ids,
            "attention_mask": attention,
            "labels": labels,
            "mm_token_type_ids": (input_ids == self.image_token_id).long() * IMAGE_TYPE_ID,
        }
        with_images = [e for e in batch if e.num_images]
        if with_images:
            out["pixel_values"] = torch.cat([e.pixel_values for e in with_images])
            out["image_grid_thw"] = torch.cat([e.image_grid_thw for e in with_images])
        return out
