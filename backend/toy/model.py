"""The toy prior's parts, built from config: word-level tokenizer, tiny CLIP text encoder, camera-aware UNet."""

from __future__ import annotations

from .vocab import WORDS

TEXT_LENGTH = 8
TEXT_WIDTH = 64
RESOLUTION = 32


def build_tokenizer():
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"[PAD]": 0, "[UNK]": 1, ",": 2}
    for word in WORDS:
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


def build_unet(camera_features: int):
    from diffusers import UNet2DConditionModel

    # The camera features are added to the timestep embedding, as Zero123/MVDream do; "scale_shift" lets that
    # embedding scale each block's normalised features (ADM's FiLM) instead of only adding a bias, so a view
    # change can reshape what a block draws.
    return UNet2DConditionModel(
        # Cross-attention only at 8x8: ~1.5 M parameters, ~70 training images/s on 2 CPU cores.
        sample_size=RESOLUTION, in_channels=3, out_channels=3, layers_per_block=1,
        block_out_channels=(32, 64, 64),
        down_block_types=("DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
        cross_attention_dim=TEXT_WIDTH, attention_head_dim=16, norm_num_groups=16,
        class_embed_type="projection", projection_class_embeddings_input_dim=camera_features,
        resnet_time_scale_shift="scale_shift")


def build_scheduler():
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", clip_sample=False)
