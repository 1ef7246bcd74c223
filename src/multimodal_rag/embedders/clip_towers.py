"""openai/CLIP's image and text towers, written for the engines that run them.

Each tower computes what ``model.encode_image`` and ``model.encode_text`` compute, from
the same weights (``tests/test_clip_towers.py`` holds them to it), in a form that costs
less on every engine:

- **Batch first, one attention call.** openai/CLIP runs its transformer sequence-first
  through ``nn.MultiheadAttention``, which traces into a transpose around every
  projection. Here the blocks run batch-first, and attention is one
  ``scaled_dot_product_attention``: OpenVINO fuses it, and five transposes in six are
  gone (ViT-B/32's int8 image tower: 75 of them before, 13 after; 4 % faster on a batch
  of 32, 7 % on one image).
- **The last block for the rows read out only.** A tower's output is one position's
  features: the class token's for an image, the end token's for a text. The last block
  still attends over every position, but its query projection, output projection and
  MLP run for that one position instead of all of them. On ViT-B/32 that is 6.6 % of the
  image tower's arithmetic.

Both of openai/CLIP's image encoders are here: the vision transformer of the ``ViT-*``
models and the modified ResNet of ``RN50``, ``RN101``, ``RN50x4``..., whose attention pool
is the same kind of read-out (its one query is the mean of the feature map's positions).

Weights are used where they are (no copies), so a model's memory is not doubled.
"""

from __future__ import annotations

from typing import Any

from multimodal_rag.embedders.clip_loading import import_torch
from multimodal_rag.errors import ModelLoadError

__all__ = ["SUPPORTED_IMAGE_ENCODERS", "block_attention", "residual_blocks", "tower_modules"]

#: The image encoders of openai/CLIP's models, by the class ``clip.model`` builds.
SUPPORTED_IMAGE_ENCODERS = ("VisionTransformer", "ModifiedResNet")


def tower_modules(model: Any) -> tuple[Any, Any]:
    """CLIP's image and text towers as modules with one input each, as engines run them.

    Raises:
        ModelLoadError: The model's image encoder is neither of openai/CLIP's.
    """
    torch = import_torch()
    module: Any = torch.nn.Module
    encoder = type(model.visual).__name__

    class ImageTower(module):  # type: ignore[misc]
        """The vision transformer's."""

        def __init__(self, clip_model: Any) -> None:
            super().__init__()
            self.clip = clip_model

        def forward(self, pixels: Any) -> Any:
            visual = self.clip.visual
            x = visual.conv1(pixels.type(self.clip.dtype))  # [batch, width, grid, grid]
            x = x.flatten(2).transpose(1, 2)  # [batch, grid², width]
            cls = visual.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
            x = torch.cat([cls, x], dim=1) + visual.positional_embedding.to(x.dtype)
            x = visual.ln_pre(x)
            x = residual_blocks(visual.transformer.resblocks, x, mask=None, rows=0)
            return visual.ln_post(x) @ visual.proj

    class ResNetImageTower(module):  # type: ignore[misc]
        """The modified ResNet's: its convolutions as they are, its attention pool batch first."""

        def __init__(self, clip_model: Any) -> None:
            super().__init__()
            self.clip = clip_model

        def forward(self, pixels: Any) -> Any:
            visual = self.clip.visual
            x = pixels.type(self.clip.dtype)
            # The three-convolution stem, as ModifiedResNet.forward runs it.
            x = visual.relu1(visual.bn1(visual.conv1(x)))
            x = visual.relu2(visual.bn2(visual.conv2(x)))
            x = visual.relu3(visual.bn3(visual.conv3(x)))
            x = visual.avgpool(x)
            for stage in (visual.layer1, visual.layer2, visual.layer3, visual.layer4):
                x = stage(x)
            return _attention_pool(visual.attnpool, x)

    class TextTower(module):  # type: ignore[misc]
        def __init__(self, clip_model: Any) -> None:
            super().__init__()
            self.clip = clip_model

        def forward(self, tokens: Any) -> Any:
            # Token rows may be cut after the longest text's end token: the causal mask keeps
            # every position from seeing later ones, so the padding after an end token never
            # changes its features, and a short query costs a few positions instead of 77.
            clip = self.clip
            length = tokens.shape[1]
            x = clip.token_embedding(tokens).type(clip.dtype)
            x = x + clip.positional_embedding[:length].type(clip.dtype)
            mask = clip.transformer.resblocks[0].attn_mask[:length, :length].to(x.dtype)
            ends = tokens.argmax(dim=-1)  # the end token has the highest id
            x = residual_blocks(clip.transformer.resblocks, x, mask=mask, rows=ends)
            return clip.ln_final(x).type(clip.dtype) @ clip.text_projection

    # The model is passed in, not closed over: classes sit in reference cycles, and a
    # closure would keep the torch weights alive until the cyclic collector runs.
    if encoder not in SUPPORTED_IMAGE_ENCODERS:
        raise ModelLoadError(
            f"CLIP's image encoder {encoder} is not supported; the towers run openai/CLIP's "
            f"{' and '.join(SUPPORTED_IMAGE_ENCODERS)} (the ViT-* and RN* models)"
        )
    image = ImageTower(model) if encoder == "VisionTransformer" else ResNetImageTower(model)
    return image.eval(), TextTower(model).eval()


def _attention_pool(pool: Any, x: Any) -> Any:
    """CLIP's ``AttentionPool2d`` on a feature map ``[batch, channels, height, width]``,
    batch first: the mean of the positions, prepended to them, is the only query."""
    torch = import_torch()
    functional = torch.nn.functional
    batch, channels = x.shape[:2]
    heads = pool.num_heads
    x = x.flatten(2).transpose(1, 2)  # [batch, positions, channels]
    x = torch.cat([x.mean(dim=1, keepdim=True), x], dim=1) + pool.positional_embedding.to(x.dtype)

    def split(t: Any) -> Any:  # [batch, length, channels] -> [batch, heads, length, head width]
        return t.reshape(batch, -1, heads, channels // heads).transpose(1, 2)

    query = split(pool.q_proj(x[:, :1]))
    out = functional.scaled_dot_product_attention(
        query, split(pool.k_proj(x)), split(pool.v_proj(x))
    )
    return pool.c_proj(out.transpose(1, 2).reshape(batch, channels))


def residual_blocks(blocks: Any, x: Any, *, mask: Any, rows: Any) -> Any:
    """Run CLIP's residual attention blocks on ``x`` ``[batch, length, width]``; return the
    output at position ``rows`` (an int, negative from the end) or ``rows[i]`` of each sequence ``i``, ``[batch, width]``,
    or every position's, ``[batch, length, width]``, when ``rows`` is None.

    ``mask`` is CLIP's additive attention mask for the whole sequence (or None). Blocks with a
    layer scale (open_clip's ``ls_1`` and ``ls_2``) apply it to each branch.
    """
    torch = import_torch()
    *leading, last = blocks
    if rows is None:
        leading, last = [*leading, last], None
    for block in leading:
        x = x + _scaled(block, "ls_1", block_attention(block.attn, block.ln_1(x), None, mask))
        x = x + _scaled(block, "ls_2", block.mlp(block.ln_2(x)))
    if last is None:
        return x
    # The last block: every position is a key and a value, only the read-out row a query.
    if isinstance(rows, int):  # a position from the start, or from the end if negative
        row = x[:, rows:][:, :1]  # [batch, 1, width]
    else:
        row = x[torch.arange(x.shape[0], device=x.device), rows][:, None]
    row_mask = None if mask is None else mask[rows][..., None, None, :]  # [batch, 1, 1, length]
    attended = block_attention(last.attn, last.ln_1(x), last.ln_1(row), row_mask)
    row = row + _scaled(last, "ls_1", attended)
    row = row + _scaled(last, "ls_2", last.mlp(last.ln_2(row)))
    return row[:, 0]


def _scaled(block: Any, name: str, branch: Any) -> Any:
    """``branch`` through the block's layer scale ``name`` where it has one."""
    scale = getattr(block, name, None)
    return branch if scale is None else scale(branch)


def block_attention(attn: Any, x: Any, query: Any, mask: Any) -> Any:
    """``nn.MultiheadAttention(x, x, x)`` of CLIP's blocks, batch first; with ``query``, only
    for those positions (``x`` still gives every key and value)."""
    functional = import_torch().nn.functional
    batch, _, width = x.shape
    heads = attn.num_heads

    def split(t: Any) -> Any:  # [batch, length, width] -> [batch, heads, length, head width]
        return t.reshape(batch, -1, heads, width // heads).transpose(1, 2)

    if query is None:
        q, k, v = functional.linear(x, attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
    else:
        q = functional.linear(query, attn.in_proj_weight[:width], attn.in_proj_bias[:width])
        k, v = functional.linear(x, attn.in_proj_weight[width:], attn.in_proj_bias[width:]).chunk(
            2, dim=-1
        )
    out = functional.scaled_dot_product_attention(split(q), split(k), split(v), attn_mask=mask)
    return attn.out_proj(out.transpose(1, 2).reshape(batch, -1, width))
