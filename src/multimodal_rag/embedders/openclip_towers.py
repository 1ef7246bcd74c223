"""open_clip's image and text towers, written for the engines that run them.

The same treatment as CLIP's towers (`clip_towers`), for the towers open_clip builds,
each computing what ``model.encode_image`` or ``model.encode_text`` computes from the same
weights (``tests/test_openclip_towers.py`` holds them to it):

- **open_clip's own transformers** (the image tower of ``ViT-B-32`` and the other plain
  ``ViT-*`` models; the text tower of every model but those with a Hugging Face text
  encoder): blocks batch first, attention one ``scaled_dot_product_attention`` instead of
  ``nn.MultiheadAttention``, and the last block for the read-out rows only: the class
  token's for an image, the pooled token's for a text (the end token's, the highest id;
  SigLIP's last position; or the first). Bidirectional text towers (SigLIP, MobileCLIP2)
  still need every position in the earlier blocks, but not in the last.
- **timm's vision transformers** (SigLIP 2's ``vit_base_patch16_siglip_*``, MobileCLIP2-B's
  and L-14's): timm's blocks already attend batch first in one call and run as they are.
  Class-token pooling (MobileCLIP2-B, L-14) runs the last block for that row only. SigLIP's
  attention-pooling head (MAP: one learned query over every position) needs every
  position of the last block, so it runs in full; the head itself is written out here,
  its query projected once for the whole batch.
- **timm's convolutional trunks** (MobileCLIP2-S0 to S4's FastViT) pool the mean of every
  position: there is no read-out row to keep. They run as timm defines them, after
  `for_inference` has folded their training branches into single convolutions, and
  their attention stage already calls ``scaled_dot_product_attention``.

Anything else (a Hugging Face text encoder, attentional poolers, custom blocks) runs
through open_clip's own code, unchanged; each tower's ``path`` says which ran.
Weights are used where they are (no copies).
"""

from __future__ import annotations

from typing import Any

from multimodal_rag.embedders.clip_towers import residual_blocks
from multimodal_rag.embedders.torch_engine import import_torch

__all__ = ["tower_modules"]

#: Text pooling open_clip offers that reads out one row per text.
_ROW_POOLS = ("first", "last", "argmax", "eos")


def tower_modules(model: Any) -> tuple[Any, Any]:
    """An open_clip model's image and text towers as modules with one input each (pixels,
    token ids), as the engines run and convert them. Each has a ``path``: ``"fast"`` plus the
    kind of tower, or ``"open_clip"`` where open_clip's own code runs."""
    return _image_tower(model).eval(), _text_tower(model).eval()


# -- image ---------------------------------------------------------------------------


def _image_tower(model: Any) -> Any:
    torch = import_torch()
    module: Any = torch.nn.Module
    visual = model.visual

    class VisionTransformerTower(module):  # type: ignore[misc]
        """open_clip's own ViT (class-token or mean pooling, no attentional pooler)."""

        path = "fast: open_clip ViT"

        def __init__(self, clip_model: Any) -> None:
            super().__init__()
            self.clip = clip_model

        def forward(self, pixels: Any) -> Any:
            vit = self.clip.visual
            x = vit._embeds(pixels)  # patches, class token, positions, ln_pre: batch first
            blocks = vit.transformer.resblocks
            if vit.pool_type == "tok":
                pooled = vit.ln_post(residual_blocks(blocks, x, mask=None, rows=0))
            else:  # "avg": the mean of the patches' features, the class token left out
                x = residual_blocks(blocks, x, mask=None, rows=None)
                if vit.final_ln_after_pool:
                    pooled = vit.ln_post(x[:, 1:].mean(dim=1))
                else:
                    pooled = vit.ln_post(x)[:, 1:].mean(dim=1)
            return pooled if vit.proj is None else pooled @ vit.proj

    class TimmTransformerTower(module):  # type: ignore[misc]
        """timm's VisionTransformer as open_clip's ``TimmModel`` wraps it."""

        path = "fast: timm ViT"

        def __init__(self, clip_model: Any) -> None:
            super().__init__()
            self.clip = clip_model

        def forward(self, pixels: Any) -> Any:
            wrapper = self.clip.visual
            trunk = wrapper.trunk
            x = trunk.norm_pre(trunk.patch_drop(trunk._pos_embed(trunk.patch_embed(pixels))))
            *leading, last = trunk.blocks
            for block in leading:
                x = block(x)
            if trunk.attn_pool is not None:
                x = trunk.norm(last(x))
                if not trunk.pool_include_prefix:
                    x = x[:, trunk.num_prefix_tokens :]
                pooled = _latent_pool(trunk.attn_pool, x)
            else:  # class-token pooling: the last block for that row only
                pooled = trunk.norm(_timm_block_row(last, x, 0))
            pooled = trunk.head(trunk.head_drop(trunk.fc_norm(pooled)))
            return wrapper.head(pooled)

    class OpenCLIPImageTower(module):  # type: ignore[misc]
        """open_clip's own ``encode_image``: timm's convolutional trunks and anything else."""

        path = "open_clip"

        def __init__(self, clip_model: Any) -> None:
            super().__init__()
            self.clip = clip_model

        def forward(self, pixels: Any) -> Any:
            return self.clip.encode_image(pixels)

    # The model is passed in, not closed over: classes sit in reference cycles, and a
    # closure would keep the torch weights alive until the cyclic collector runs.
    if _is_plain_vit(visual):
        return VisionTransformerTower(model)
    if _is_timm_vit(visual):
        return TimmTransformerTower(model)
    tower = OpenCLIPImageTower(model)
    if type(visual).__name__ == "TimmModel":
        tower.path = f"open_clip: timm {type(visual.trunk).__name__}"
    return tower


def _is_plain_vit(visual: Any) -> bool:
    return (
        type(visual).__name__ == "VisionTransformer"
        and getattr(visual, "attn_pool", None) is None
        and getattr(visual, "pool_type", None) in ("tok", "avg")
        and not getattr(visual, "output_tokens", False)
        and _plain_blocks(visual.transformer.resblocks)
    )


def _is_timm_vit(visual: Any) -> bool:
    if type(visual).__name__ != "TimmModel":
        return False
    trunk: Any = visual.trunk
    if type(trunk).__name__ != "VisionTransformer":
        return False
    pool = trunk.attn_pool
    if pool is not None:
        return type(pool).__name__ == "AttentionPoolLatent" and pool.pos_embed is None
    last = trunk.blocks[-1]
    return (
        trunk.global_pool == "token"
        and trunk.num_prefix_tokens >= 1
        and type(last).__name__ == "Block"
        and type(last.attn).__name__ == "Attention"
        and getattr(last.attn, "gate", None) is None
    )


def _timm_block_row(block: Any, x: Any, row: int) -> Any:
    """timm's ``Block`` on ``x`` ``[batch, length, width]`` for position ``row`` only:
    every position a key and a value, that one a query. Returns ``[batch, width]``."""
    functional = import_torch().nn.functional
    attn = block.attn
    batch, length, width = x.shape
    heads, head_dim = attn.num_heads, attn.head_dim
    normed = block.norm1(x)
    dim = attn.attn_dim
    weight, bias = attn.qkv.weight, attn.qkv.bias
    q = functional.linear(
        normed[:, row : row + 1], weight[:dim], None if bias is None else bias[:dim]
    )
    kv = functional.linear(normed, weight[dim:], None if bias is None else bias[dim:])
    q = attn.q_norm(q.reshape(batch, 1, heads, head_dim).transpose(1, 2))
    k, v = kv.reshape(batch, length, 2, heads, head_dim).permute(2, 0, 3, 1, 4).unbind(0)
    out = functional.scaled_dot_product_attention(q, attn.k_norm(k), v)
    out = attn.proj(attn.norm(out.transpose(1, 2).reshape(batch, 1, dim)))
    y = x[:, row : row + 1] + block.ls1(out)
    y = y + block.ls2(block.mlp(block.norm2(y)))
    return y[:, 0]


def _latent_pool(pool: Any, x: Any) -> Any:
    """timm's ``AttentionPoolLatent`` (SigLIP's MAP head) on ``x`` ``[batch, length, width]``:
    learned queries, the same for every image, attend over every position."""
    functional = import_torch().nn.functional
    batch, length, width = x.shape
    heads, head_dim, queries = pool.num_heads, pool.head_dim, pool.latent_len
    # The queries depend on the weights alone: projected once, shared by the whole batch.
    q = pool.q(pool.latent).reshape(1, queries, heads, head_dim).transpose(1, 2)
    q = pool.q_norm(q).expand(batch, -1, -1, -1)
    k, v = pool.kv(x).reshape(batch, length, 2, heads, head_dim).permute(2, 0, 3, 1, 4).unbind(0)
    out = functional.scaled_dot_product_attention(q, pool.k_norm(k), v)
    out = pool.proj(out.transpose(1, 2).reshape(batch, queries, width))
    if pool.mlp is not None:
        out = out + pool.mlp(pool.norm(out))
    if pool.pool == "token":
        return out[:, 0]
    if pool.pool == "avg":
        return out.mean(dim=1)
    return out


# -- text ----------------------------------------------------------------------------


def _text_tower(model: Any) -> Any:
    torch = import_torch()
    module: Any = torch.nn.Module
    # CLIP keeps its text transformer's parts on the model itself; CustomTextCLIP (SigLIP,
    # MobileCLIP2...) in model.text, a TextTransformer or a Hugging Face encoder.
    text = getattr(model, "text", model)

    class TextTransformerTower(module):  # type: ignore[misc]
        """open_clip's ``TextTransformer`` (or CLIP's own text parts): read-out rows only in
        the last block."""

        path = "fast: open_clip text transformer"

        def __init__(self, parts: Any, pool: str, eos_id: int | None) -> None:
            super().__init__()
            self.parts = parts
            self.pool = pool
            self.eos_id = eos_id

        def forward(self, tokens: Any) -> Any:
            parts = self.parts
            length = tokens.shape[1]
            x = parts.token_embedding(tokens) + parts.positional_embedding[:length]
            mask = parts.attn_mask
            if mask is not None:  # causal: each position sees itself and the earlier ones
                mask = mask[:length, :length].to(x.dtype)
            if self.pool == "argmax":  # the end token has the highest id
                rows: Any = tokens.argmax(dim=-1)
            elif self.pool == "eos":
                rows = (tokens == self.eos_id).int().argmax(dim=-1)
            elif self.pool == "last":
                rows = -1  # from the end: a converted tower takes rows of any length
            else:
                rows = 0
            pooled = parts.ln_final(
                residual_blocks(parts.transformer.resblocks, x, mask=mask, rows=rows)
            )
            projection = parts.text_projection
            if projection is None:
                return pooled
            if isinstance(projection, torch.nn.Linear):
                return projection(pooled)
            return pooled @ projection

    class OpenCLIPTextTower(module):  # type: ignore[misc]
        """open_clip's own ``encode_text``: Hugging Face encoders and anything else."""

        path = "open_clip"

        def __init__(self, clip_model: Any) -> None:
            super().__init__()
            self.clip = clip_model

        def forward(self, tokens: Any) -> Any:
            return self.clip.encode_text(tokens)

    custom = text is not model
    pool = str(getattr(text, "pool_type" if custom else "text_pool_type", ""))
    eos_id = getattr(text, "eos_id" if custom else "text_eos_id", None)
    plain = (
        hasattr(text, "token_embedding")
        and getattr(text, "cls_emb", None) is None
        and not getattr(text, "use_pad_mask", False)
        and not getattr(text, "output_tokens", False)
        and pool in _ROW_POOLS
        and (pool != "eos" or eos_id is not None)
        and _plain_blocks(text.transformer.resblocks)
    )
    if plain:
        return TextTransformerTower(text, pool, eos_id)
    return OpenCLIPTextTower(model)


def _plain_blocks(blocks: Any) -> bool:
    """Whether every block is open_clip's ``ResidualAttentionBlock`` with one packed
    ``nn.MultiheadAttention`` projection (what `residual_blocks` runs)."""
    return all(
        type(block).__name__ == "ResidualAttentionBlock"
        and not hasattr(block, "ln_1_kv")
        and getattr(block.attn, "in_proj_weight", None) is not None
        for block in blocks
    )
