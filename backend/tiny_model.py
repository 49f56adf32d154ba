"""Tiny, randomly initialised diffusion models (Stable-Diffusion-, IF- and pixel-shaped), written with
`save_pretrained`.

They know nothing about images; they exist so the whole pipeline (loading
through `from_pretrained`, latent SDS, extraction, export) can run offline
on a CPU in seconds, in tests and for trying the tool before real weights
are at hand.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

_WORDS = ("a an the red green blue yellow white orange purple black cube sphere torus cone cylinder "
          "front side back overhead view of").split()


def write_tiny_sd(folder: str | Path, seed: int = 0) -> Path:
    """Write a tiny SD pipeline (UNet 8x8 latents, 2-block VAE, 2-layer CLIP) to `folder`."""
    import torch
    from diffusers import AutoencoderKL, DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    folder = Path(folder)
    torch.manual_seed(seed)
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = tiny_clip_tokenizer(Path(tmp), CLIPTokenizer)
        text_encoder = CLIPTextModel(CLIPTextConfig(
            vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_attention_heads=4,
            num_hidden_layers=2, max_position_embeddings=77, bos_token_id=0, eos_token_id=1, pad_token_id=1))
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32, norm_num_groups=32, attention_head_dim=8)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(32, 64), latent_channels=4,
        norm_num_groups=32, sample_size=16)
    scheduler = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                              num_train_timesteps=1000, clip_sample=False, steps_offset=1)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.save_pretrained(folder)
    return folder


def write_tiny_pixel_model(folder: str | Path, seed: int = 0) -> Path:
    """A tiny pixel-space prior (no VAE; UNet predicts noise and variance, as DeepFloyd IF does).

    diffusers has no generic pipeline class for this layout, so the components are saved one by
    one and `model_index.json` names them, the way `load_guidance` reads any model.
    """
    import diffusers
    import torch
    from diffusers import DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    folder = Path(folder)
    torch.manual_seed(seed)
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = tiny_clip_tokenizer(Path(tmp), CLIPTokenizer)
        tokenizer.save_pretrained(folder / "tokenizer")
    CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_attention_heads=4,
        num_hidden_layers=2, max_position_embeddings=77, bos_token_id=0, eos_token_id=1, pad_token_id=1,
    )).save_pretrained(folder / "text_encoder")
    UNet2DConditionModel(
        sample_size=16, in_channels=3, out_channels=6, layers_per_block=1, block_out_channels=(32, 64),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32, norm_num_groups=32, attention_head_dim=8).save_pretrained(folder / "unet")
    DDPMScheduler(beta_schedule="squaredcos_cap_v2", num_train_timesteps=1000, clip_sample=False,
                  variance_type="learned_range").save_pretrained(folder / "scheduler")
    index = {"_class_name": "DiffusionPipeline", "_diffusers_version": diffusers.__version__,
             "unet": ["diffusers", "UNet2DConditionModel"], "scheduler": ["diffusers", "DDPMScheduler"],
             "text_encoder": ["transformers", "CLIPTextModel"], "tokenizer": ["transformers", "CLIPTokenizer"]}
    (folder / "model_index.json").write_text(json.dumps(index, indent=2), encoding="utf-8")
    return folder


def write_tiny_if(folder: str | Path, seed: int = 0) -> Path:
    """A tiny DeepFloyd-IF-stage-I-shaped pipeline (`IFPipeline`), written with `save_pretrained`.

    Everything that makes IF different from the other priors is there, small: a pixel-space UNet
    (16 x 16 here, 64 x 64 in IF) with IF's block types, text projection and text time-embedding,
    returning noise and learned variance (6 channels); a T5 encoder and T5 tokenizer; IF's cosine
    schedule with learned-range variance.
    """
    import torch
    from diffusers import DDPMScheduler, IFPipeline, UNet2DConditionModel
    from transformers import T5Config, T5EncoderModel, T5Tokenizer

    folder = Path(folder)
    torch.manual_seed(seed)
    # A T5 (SentencePiece unigram) vocabulary: its specials, the words whole, and letters for the rest.
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    pieces += [("\u2581" + word, -1.0) for word in dict.fromkeys(_WORDS)]
    pieces += [(ch, -5.0) for ch in "abcdefghijklmnopqrstuvwxyz,."]
    tokenizer = T5Tokenizer(vocab=pieces, extra_ids=0, model_max_length=77)
    text_encoder = T5EncoderModel(T5Config(vocab_size=len(tokenizer), d_model=32, d_kv=8, d_ff=64, num_layers=2,
                                           num_heads=4, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0))
    unet = UNet2DConditionModel(
        sample_size=16, in_channels=3, out_channels=6, layers_per_block=1, block_out_channels=(32, 64),
        down_block_types=("SimpleCrossAttnDownBlock2D", "ResnetDownsampleBlock2D"),
        up_block_types=("ResnetUpsampleBlock2D", "SimpleCrossAttnUpBlock2D"),
        mid_block_type="UNetMidBlock2DSimpleCrossAttn", cross_attention_dim=64, encoder_hid_dim=32,
        encoder_hid_dim_type="text_proj", addition_embed_type="text", addition_embed_type_num_heads=2,
        attention_head_dim=8, norm_num_groups=32, act_fn="gelu", resnet_time_scale_shift="scale_shift")
    scheduler = DDPMScheduler(beta_schedule="squaredcos_cap_v2", num_train_timesteps=1000,
                              variance_type="learned_range", thresholding=True, clip_sample=True)
    pipe = IFPipeline(tokenizer=tokenizer, text_encoder=text_encoder, unet=unet, scheduler=scheduler,
                      safety_checker=None, feature_extractor=None, watermarker=None, requires_safety_checker=False)
    pipe.save_pretrained(folder)
    return folder


def tiny_clip_tokenizer(tmp: Path, cls):
    """A CLIP BPE tokenizer over a small hand-written vocabulary: characters plus whole words."""
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    merges = ["#version: 0.2"]
    for ch in "abcdefghijklmnopqrstuvwxyz,.":
        vocab.setdefault(ch, len(vocab))
        vocab.setdefault(ch + "</w>", len(vocab))
    for word in _WORDS:
        # Merge left to right: "c u", "cu b", "cub e</w>" ... so whole words become one token.
        piece = word[0]
        for i, ch in enumerate(word[1:], start=1):
            last = i == len(word) - 1
            nxt = ch + "</w>" if last else ch
            merges.append(f"{piece} {nxt}")
            piece = piece + nxt
            vocab.setdefault(piece, len(vocab))
        vocab.setdefault(word + "</w>", len(vocab))
    (tmp / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (tmp / "merges.txt").write_text("\n".join(dict.fromkeys(merges)) + "\n", encoding="utf-8")
    return cls(str(tmp / "vocab.json"), str(tmp / "merges.txt"), model_max_length=77)
