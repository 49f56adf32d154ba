"""The toy priors' parts, built from config: word-level tokenizer, tiny CLIP text encoder, camera-aware UNet."""

from __future__ import annotations

from .vocab import WORDS

TEXT_LENGTH = 8
TEXT_WIDTH = 64
RESOLUTION = 32


def build_tokenizer(words: tuple[str, ...] = WORDS):
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"[PAD]": 0, "[UNK]": 1, ",": 2}
    for word in words:
        vocab.setdefault(word, len(vocab))
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    core.normalizer = normalizers.Lowercase()
    core.pre_tokenizer = pre_tokenizers.Whitespace()  # also splits off the comma
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="[PAD]", unk_token="[UNK]",
                                   model_max_length=TEXT_LENGTH)


def build_text_encoder(vocab_size: int):
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(CLIPTextConfig(
        vocab_size=vocab_size, hidden_size=TEXT_WIDTH, intermediate_size=2 * TEXT_WIDTH, num_attention_heads=4,
        num_hidden_layers=1, max_position_embeddings=TEXT_LENGTH, pad_token_id=0, bos_token_id=0, eos_token_id=0))


def build_unet(camera_features: int, resolution: int = RESOLUTION, patch: int = 1,
               channels: tuple[int, int, int] = (32, 64, 64)):
    """`patch` > 1: the UNet works on patch x patch blocks of pixels as channels (guidance/pixel.py's
    `patch_size`), so a 64 px prior with patch 2 costs what a 32 px one does."""
    from diffusers import UNet2DConditionModel

    if resolution % patch:
        raise ValueError(f"resolution {resolution} is not a multiple of the patch size {patch}")
    # The camera features are added to the timestep embedding, as Zero123/MVDream do; "scale_shift" lets that
    # embedding scale each block's normalised features (ADM's FiLM) instead of only adding a bias, so a view
    # change can reshape what a block draws.
    return UNet2DConditionModel(
        # Cross-attention only at the coarsest level. toy-shapes: ~1.5 M parameters, ~90 images/s on 2 CPU
        # cores; toy-objects (64 px on 2x2 patches, wider): ~3.4 M, ~50 images/s.
        sample_size=resolution // patch, in_channels=3 * patch * patch, out_channels=3 * patch * patch,
        layers_per_block=1, block_out_channels=channels,
        down_block_types=("DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
        cross_attention_dim=TEXT_WIDTH, attention_head_dim=16, norm_num_groups=16,
        class_embed_type="projection", projection_class_embeddings_input_dim=camera_features,
        resnet_time_scale_shift="scale_shift")


def build_scheduler(prediction_type: str = "epsilon"):
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", clip_sample=False,
                         prediction_type=prediction_type)
