"""Build small Kosmos-2 checkpoints offline with transformers' own classes (random weights).

Random weights give the same junk for every image and never ground a phrase: they exercise loading, batching,
writing and resuming. Tests about boxes use the trained checkpoint in tests/fixtures/kosmos2-shapes.
"""

from __future__ import annotations

import string

WORDS = (
    "An image of a the red green blue circle square and It is Describe this in detail: . , on with shows photo picture"
).split()


def build_tokenizer():
    from transformers import XLMRobertaTokenizer

    vocab = [("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("<mask>", 0.0)]
    vocab += [(f"<reserved_{i}>", -100.0) for i in range(70)]  # ids 4..67 stand in for the 64 image tokens
    vocab += [("\u2581" + w, -1.0) for w in WORDS]
    chars = string.ascii_letters + string.digits + string.punctuation
    vocab += [(c, -5.0) for c in chars] + [("\u2581" + c, -6.0) for c in chars] + [("\u2581", -3.0)]
    return XLMRobertaTokenizer(vocab=vocab)


def build_processor():
    from transformers import Kosmos2Processor
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    image_processor = CLIPImageProcessorPil(
        size={"height": 224, "width": 224}, do_center_crop=False, crop_size={"height": 224, "width": 224}
    )
    return Kosmos2Processor(image_processor, build_tokenizer())


def build_tiny(
    out: str, seed: int = 0, width: int = 64, layers: int = 2, heads: int = 2, latent_query_num: int = 64
) -> str:
    """A 2-layer, width-64 Kosmos-2 (about 1 MB) saved with save_pretrained at `out`. `heads` must divide `width`;
    `latent_query_num` (image tokens per prompt) is at most 70, the tokenizer's reserved ids."""
    import torch
    from transformers import Kosmos2Config, Kosmos2ForConditionalGeneration

    processor = build_processor()
    config = Kosmos2Config(
        text_config=dict(
            vocab_size=len(processor.tokenizer),
            embed_dim=width,
            layers=layers,
            attention_heads=heads,
            ffn_dim=2 * width,
            max_position_embeddings=512,
        ),
        vision_config=dict(
            hidden_size=width,
            intermediate_size=2 * width,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            image_size=224,
            patch_size=28,
        ),
        latent_query_num=latent_query_num,
    )
    torch.manual_seed(seed)
    model = Kosmos2ForConditionalGeneration(config).eval()
    model.generation_config.eos_token_id = 2
    model.generation_config.pad_token_id = 1
    processor.save_pretrained(out)
    model.save_pretrained(out)
    return out
