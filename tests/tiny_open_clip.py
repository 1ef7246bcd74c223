"""Tiny random open_clip models and a tiny Hugging Face tokenizer, made on the spot.

No registry ships real open_clip weights, so the tests shrink real architecture configs
(an openai-style ViT-B-32 and a SigLIP 2 with its non-causal, last-token text tower),
register them with open_clip under new names, give them their family's pretrained
preprocessing, build them with random weights and save them; the embedder then loads
them through the real loading path, as it would a downloaded file.
"""

from __future__ import annotations

import json
from copy import deepcopy
from pathlib import Path
from typing import Any

#: Tiny model name -> (the real architecture it shrinks, the real tag whose preprocessing it takes).
FAMILIES = {
    "tiny-ViT-B-32": ("ViT-B-32", "openai"),
    "tiny-ViT-B-16-SigLIP2": ("ViT-B-16-SigLIP2", "webli"),
}

#: Sentences the tiny tokenizer learns its vocabulary from: several scripts and an emoji.
SENTENCES = [
    "a red stamp with a bird",
    "a photo of a dog in the snow",
    "a blue car parked on a street",
    "تمبر قرمز با پرنده",
    "عکس یک سگ در برف",
    "طابع أحمر مع طائر",
    "红色邮票上有一只鸟",
    "a cat 🐱 on a sofa",
]


def tiny_config(family: str, *, vocab_size: int) -> dict[str, Any]:
    """The real config of ``family`` with narrow, shallow towers (and the same kinds of layer)."""
    import open_clip

    config = deepcopy(open_clip.get_model_config(family))
    config["embed_dim"] = 32
    vision = config["vision_cfg"]
    # A timm trunk keeps its full size whatever the config says: a native ViT stands in.
    for key in [k for k in vision if k.startswith("timm_")]:
        del vision[key]
    vision.update(image_size=32, layers=1, width=64, patch_size=16, head_width=32)
    text = config["text_cfg"]
    text.update(width=64, heads=2, layers=1)
    if "hf_tokenizer_name" in text:
        text["vocab_size"] = vocab_size
    return config


def register_tiny_models(folder: Path, *, vocab_size: int) -> None:
    """Make the tiny models known to open_clip, with their family's pretrained preprocessing."""
    import open_clip
    from open_clip import pretrained

    folder.mkdir(parents=True, exist_ok=True)
    for name, (family, tag) in FAMILIES.items():
        (folder / f"{name}.json").write_text(json.dumps(tiny_config(family, vocab_size=vocab_size)))
        cfg = dict(open_clip.get_pretrained_cfg(family, tag))
        # No download for these: only the preprocessing (and QuickGELU) is the family's.
        cfg.update(url="", hf_hub="")
        pretrained._PRETRAINED[name] = {tag: cfg}
    open_clip.add_model_config(folder)


def make_tiny_checkpoint(
    name: str, path: Path, *, seed: int = 0, safetensors: bool = False
) -> Path:
    """Build tiny model ``name`` with random weights and save its state_dict."""
    import open_clip
    import torch

    family, tag = FAMILIES[name]
    torch.manual_seed(seed)
    quick_gelu = bool(open_clip.get_pretrained_cfg(family, tag).get("quick_gelu", False))
    model = open_clip.create_model(name, pretrained=None, force_quick_gelu=quick_gelu)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {key: value.contiguous() for key, value in model.state_dict().items()}
    if safetensors:
        from safetensors.torch import save_file

        save_file(state, str(path))
    else:
        torch.save(state, path)
    return path


def make_tiny_tokenizer(folder: Path) -> tuple[Path, int]:
    """A WordPiece tokenizer trained on :data:`SENTENCES`, saved as transformers loads it.

    Returns the folder and the vocabulary's size. Like SigLIP 2's, it ends each text
    with an end token and pads after it.
    """
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.NFKC()
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.WordPieceTrainer(
        vocab_size=300, special_tokens=["[PAD]", "[UNK]", "[EOS]"], show_progress=False
    )
    tokenizer.train_from_iterator(SENTENCES, trainer)
    tokenizer.post_processor = processors.TemplateProcessing(
        single="$A [EOS]", special_tokens=[("[EOS]", tokenizer.token_to_id("[EOS]"))]
    )
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "PreTrainedTokenizerFast",
                "pad_token": "[PAD]",
                "unk_token": "[UNK]",
                "eos_token": "[EOS]",
                "model_max_length": 64,
            }
        )
    )
    return folder, tokenizer.get_vocab_size()


#: Tiny multilingual models whose text tower is a Hugging Face transformer: tiny name ->
#: (the real architecture it shrinks, its real tag, the made-up hub repository of the
#: transformer and tokenizer, the made-up hub repository of the weights). Only a fake hub
#: serves them.
TINY_HF_TEXT = {
    "tiny-xlm-roberta-base-ViT-B-32": (
        "xlm-roberta-base-ViT-B-32",
        "laion5b_s13b_b90k",
        "tiny-org/tiny-xlm-roberta",
        "tiny-org/tiny-xlm-clip",
    ),
    "tiny-nllb-clip-base": (
        "nllb-clip-base",
        "v1",
        "tiny-org/tiny-nllb-200",
        "tiny-org/tiny-nllb-clip",
    ),
}
TINY_XLM = "tiny-xlm-roberta-base-ViT-B-32"
TINY_XLM_TAG, TINY_XLM_TEXT_REPO, TINY_XLM_WEIGHTS_REPO = TINY_HF_TEXT[TINY_XLM][1:]


def _unigram_tokenizer(special_tokens: list[str]) -> Any:
    """A unigram tokenizer (as sentencepiece's) trained on :data:`SENTENCES`, specials first."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.Unigram())
    tokenizer.normalizer = normalizers.NFKC()
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(
        vocab_size=200, special_tokens=special_tokens, unk_token="<unk>", show_progress=False
    )
    tokenizer.train_from_iterator(SENTENCES, trainer)
    return tokenizer


def make_tiny_xlm_roberta_repo(folder: Path) -> Path:
    """A tiny xlm-roberta as its hub repository holds it: ``config.json`` and ``tokenizer.json``.

    Like the real ``xlm-roberta-base``, there is no ``tokenizer_config.json``: transformers
    picks the tokenizer from the config's model type. The special tokens sit at xlm-roberta's ids.
    """
    from tokenizers import processors
    from transformers import XLMRobertaConfig

    tokenizer = _unigram_tokenizer(["<s>", "<pad>", "</s>", "<unk>"])
    tokenizer.add_special_tokens(["<mask>"])
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>",
        pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", 0), ("</s>", 2)],
    )
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(folder / "tokenizer.json"))
    XLMRobertaConfig(
        vocab_size=tokenizer.get_vocab_size(),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=80,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
    ).save_pretrained(folder)
    return folder


def make_tiny_nllb_repo(folder: Path) -> Path:
    """A tiny NLLB-200 (an M2M100 encoder-decoder; open_clip keeps the encoder) as its hub
    repository holds it: ``config.json``, ``tokenizer.json`` and ``tokenizer_config.json``.

    transformers' NLLB tokenizer adds its 200 language codes and marks each text with one.
    """
    from transformers import AutoTokenizer, M2M100Config

    folder.mkdir(parents=True, exist_ok=True)
    _unigram_tokenizer(["<s>", "<pad>", "</s>", "<unk>"]).save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "NllbTokenizer",
                "src_lang": "eng_Latn",
                "bos_token": "<s>",
                "eos_token": "</s>",
                "pad_token": "<pad>",
                "unk_token": "<unk>",
            }
        )
    )
    vocab_size = len(AutoTokenizer.from_pretrained(str(folder), local_files_only=True))
    M2M100Config(
        vocab_size=vocab_size,
        d_model=32,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        max_position_embeddings=80,
        pad_token_id=1,
    ).save_pretrained(folder)
    return folder


def register_tiny_hf_text_model(name: str, folder: Path) -> None:
    """Make tiny model ``name`` of :data:`TINY_HF_TEXT` known to open_clip, with its real tag's
    preprocessing and a download from its made-up weights repository."""
    import open_clip
    from open_clip import pretrained

    family, tag, text_repo, weights_repo = TINY_HF_TEXT[name]
    config = deepcopy(open_clip.get_model_config(family))
    config["embed_dim"] = 32
    config["vision_cfg"].update(image_size=32, layers=1, width=64, patch_size=16, head_width=32)
    config["text_cfg"].update(hf_model_name=text_repo, hf_tokenizer_name=text_repo)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.json").write_text(json.dumps(config))
    cfg = dict(open_clip.get_pretrained_cfg(family, tag))
    cfg.update(url="", hf_hub=f"{weights_repo}/")
    pretrained._PRETRAINED[name] = {tag: cfg}
    open_clip.add_model_config(folder)


def make_tiny_hf_text_weights_repo(
    name: str, text_repo: Path, folder: Path, *, seed: int = 0
) -> Path:
    """The weights repository of tiny model ``name``: random weights as
    ``open_clip_model.safetensors``, the text tower built from the local ``text_repo``."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    text_cfg = dict(open_clip.get_model_config(name)["text_cfg"])
    text_cfg.update(hf_model_name=str(text_repo), hf_model_pretrained=False)
    model = open_clip.create_model(name, pretrained=None, text_cfg=text_cfg)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(
        {key: value.contiguous() for key, value in model.state_dict().items()},
        str(folder / "open_clip_model.safetensors"),
    )
    return folder


#: Shrunk timm trunks with the kinds of layer of the real ones: registered name -> (the timm
#: model it shrinks, the arguments that shrink it).
TIMM_TRUNKS = {
    "tiny_vit_siglip_map": (  # SigLIP 2's: no class token, attention-pooling (MAP) head
        "vit_base_patch16_siglip_224",
        {"img_size": 32, "embed_dim": 64, "depth": 2, "num_heads": 2},
    ),
    "tiny_vit_clip_token": (  # MobileCLIP2-L-14's kind: class-token pooling
        "vit_base_patch16_clip_224",
        {"img_size": 32, "embed_dim": 64, "depth": 2, "num_heads": 2},
    ),
    "tiny_fastvit_mci0": (  # MobileCLIP2-S0's FastViT: convolutions, one attention stage
        "fastvit_mci0",
        {"layers": (1, 1, 1, 1), "embed_dims": (16, 32, 64, 128)},
    ),
}

#: Tiny models whose image tower is a shrunk timm trunk: name -> (the real architecture whose
#: text tower and pooling they keep, the trunk of TIMM_TRUNKS, the input size).
TIMM_FAMILIES = {
    "tiny-timm-ViT-B-16-SigLIP2": ("ViT-B-16-SigLIP2", "tiny_vit_siglip_map", 32),
    "tiny-timm-MobileCLIP2-L-14": ("MobileCLIP2-L-14", "tiny_vit_clip_token", 32),
    "tiny-timm-MobileCLIP2-S0": ("MobileCLIP2-S0", "tiny_fastvit_mci0", 64),
}


def register_tiny_timm_models(folder: Path) -> None:
    """Make the shrunk timm trunks known to timm and the models of :data:`TIMM_FAMILIES` known
    to open_clip, which then builds them with its own factory as it builds the real ones."""
    import open_clip
    import timm
    from timm.models import register_model

    for trunk, (real, arguments) in TIMM_TRUNKS.items():
        if trunk in timm.list_models(trunk):
            continue

        def build(
            pretrained: bool = False, *, _real: str = real, _args: Any = arguments, **kwargs: Any
        ) -> Any:
            return timm.create_model(_real, pretrained=False, **{**_args, **kwargs})

        build.__name__ = trunk
        build.__module__ = "tiny_open_clip"
        register_model(build)
    folder.mkdir(parents=True, exist_ok=True)
    for name, (family, trunk, size) in TIMM_FAMILIES.items():
        config = deepcopy(open_clip.get_model_config(family))
        config["embed_dim"] = 32
        config["vision_cfg"].update(timm_model_name=trunk, image_size=size)
        config["text_cfg"].update(width=64, heads=2, layers=2, vocab_size=300)
        config["text_cfg"].pop("hf_tokenizer_name", None)
        (folder / f"{name}.json").write_text(json.dumps(config))
    open_clip.add_model_config(folder)
