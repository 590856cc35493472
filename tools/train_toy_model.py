"""Train the tiny Kosmos-2 that the tests use as a fixture: it really grounds coloured shapes.

    python tools/train_toy_model.py --out tests/fixtures/kosmos2-shapes [--steps 3500] [--seed 0]

Builds a word-level tokenizer and a small Kosmos2ForConditionalGeneration from transformers' own classes, trains
it on scenes from tools/shapes.py (CPU, seeded, deterministic) and saves processor and model with
save_pretrained. Three kinds of example are mixed so that every command has something to say:

    caption  <grounding> An image of<phrase> a red circle</phrase><object>..</object> and<phrase> ...</phrase>...
    refer    <grounding><phrase> It</phrase><object>..</object> is a red circle.
    find     <grounding><phrase> a red circle</phrase><object>..</object>

All targets come from the processor (text + bboxes=), each ending with </s>; the loss covers only the completion.
Progress goes to stdout (and --log); the last lines are an evaluation on held-out scenes through generate.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import string
import sys
import time
from pathlib import Path

import torch
from tokenizers import decoders, pre_tokenizers

sys.path.insert(0, str(Path(__file__).resolve().parent))
import shapes  # noqa: E402
from transformers import (  # noqa: E402
    Kosmos2Config,
    Kosmos2ForConditionalGeneration,
    Kosmos2Processor,
    XLMRobertaTokenizer,
)
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil  # noqa: E402
from transformers.tokenization_utils_tokenizers import TokenizersBackend  # noqa: E402

CAPTION_PROMPT = "<grounding> An image of"
DETAIL_PROMPT = "<grounding> Describe this image in detail:"
REFER_PROMPT = "<grounding><phrase> It</phrase> is"
WORDS = ["An", "image", "of", "It", "is", "Describe", "this", "in", "detail:", "and", ".", "a", "an", "the"]
WORDS += list(shapes.COLORS) + list(shapes.SHAPES)
TRAIN_SIZES = shapes.CLI_SIZES + ((256, 256), (240, 320), (360, 240))
SPECIALS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]


def build_processor() -> Kosmos2Processor:
    """Word-level Unigram tokenizer (whole words, then single characters) wrapped in a Kosmos2Processor."""
    vocab = [(t, 0.0) for t in SPECIALS] + [(f"<reserved_{i}>", -100.0) for i in range(70)]
    vocab += [("▁" + w, -1.0) for w in WORDS]
    chars = string.ascii_letters + string.digits + string.punctuation
    vocab += [("▁" + c, -8.0) for c in chars if c not in WORDS] + [(c, -10.0) for c in chars] + [("▁", -3.0)]
    backend = XLMRobertaTokenizer(vocab=vocab)._tokenizer
    # Like the original sentencepiece model: no space after a tag, so "</object>." decodes without one.
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=True)
    backend.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first", split=True)
    tokenizer = TokenizersBackend(
        tokenizer_object=backend,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        mask_token="<mask>",
        sep_token="</s>",
        cls_token="<s>",
    )
    image_processor = CLIPImageProcessorPil(
        size={"height": 224, "width": 224}, do_center_crop=False, crop_size={"height": 224, "width": 224}
    )
    return Kosmos2Processor(image_processor, tokenizer)


def sincos_2d(rows: int, cols: int, dim: int) -> torch.Tensor:
    """(rows*cols, dim) sine-cosine codes of cell centres, row-major; half the channels code y, half x.

    Periods run from two cells (the finest a grid can show) to twice the image side.
    """
    periods = torch.logspace(math.log2(2 / rows), 1, dim // 4, base=2)  # in units of the image side

    def code(coord):
        angle = 2 * math.pi * coord[:, None] / periods
        return torch.cat([angle.sin(), angle.cos()], dim=1)

    y, x = torch.meshgrid((torch.arange(rows) + 0.5) / rows, (torch.arange(cols) + 0.5) / cols, indexing="ij")
    return torch.cat([code(y.flatten()), code(x.flatten())], dim=1)


@torch.no_grad()
def init_vision(model, blocks: int = 4) -> None:
    """Start the vision tower from features a reader can use: colour and place.

    Random patch filters and random layers bury the colour of a few object patches under the grey level of all
    the others, and the text model takes thousands of steps to dig it out. Instead, the first 2 * blocks**2
    channels of a patch are the chroma (R - G, G - B: zero on any grey) of its blocks x blocks sub-squares
    (a 28-pixel patch in 7-pixel squares: the 32-cell grid of the <patch_index> tokens), the other channels
    carry a 2D sine-cosine code of the patch position, and the encoder layers start as identities (zero output
    projections), so these features reach the projection as they are.
    """
    vision = model.vision_model.model
    emb = vision.embeddings
    conv, hidden = emb.patch_embedding, emb.embed_dim
    size = conv.weight.shape[-1] // blocks
    conv.weight.zero_()
    channel = 0
    for by in range(blocks):
        for bx in range(blocks):
            square = (slice(by * size, (by + 1) * size), slice(bx * size, (bx + 1) * size))
            for first, second in ((0, 1), (1, 2)):  # R - G, G - B
                conv.weight[(channel, first, *square)] = 1 / size**2
                conv.weight[(channel, second, *square)] = -1 / size**2
                channel += 1
    side = int(math.sqrt(emb.num_patches))
    emb.position_embedding.weight.zero_()
    emb.position_embedding.weight[1:, channel:] = sincos_2d(side, side, hidden - channel)
    for layer in vision.encoder.layers:
        for linear in (layer.self_attn.out_proj, layer.mlp.fc2):
            linear.weight.zero_()
            linear.bias.zero_()


def build_model(processor: Kosmos2Processor) -> Kosmos2ForConditionalGeneration:
    tokenizer = processor.tokenizer
    config = Kosmos2Config(
        text_config=dict(
            vocab_size=len(tokenizer),
            embed_dim=128,
            layers=3,
            attention_heads=4,
            ffn_dim=512,
            max_position_embeddings=256,
            dropout=0.0,
            attention_dropout=0.0,
            init_std=128**-0.5,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        ),
        vision_config=dict(
            hidden_size=64,
            intermediate_size=256,
            num_hidden_layers=2,
            num_attention_heads=4,
            image_size=224,
            patch_size=28,
        ),
        latent_query_num=64,
    )
    model = Kosmos2ForConditionalGeneration(config)
    with torch.no_grad():
        # The <patch_index> tokens start as a 2D code of their cell, so neighbouring cells start out similar.
        grid = int(math.sqrt(processor.num_patch_index_tokens))
        first = tokenizer.convert_tokens_to_ids("<patch_index_0000>")
        embed = model.text_model.model.embed_tokens.weight  # tied to lm_head
        codes = sincos_2d(grid, grid, config.text_config.embed_dim) * config.text_config.init_std * math.sqrt(2)
        embed[first : first + grid * grid] = codes
    for cfg in (model.generation_config, model.text_model.generation_config):
        cfg.bos_token_id, cfg.eos_token_id, cfg.pad_token_id = 0, 2, 1
    return model


@torch.no_grad()
def align_resampler(model, pixel_values: torch.Tensor, gamma: float = 64.0, out_scale: float = 4.0) -> None:
    """Start the image-to-text projection as "latent query j looks at patch j".

    With random weights each of the 64 latent queries mixes all patches, the text model only ever sees blends,
    and training stalls at the mean box. Here the queries are the directions that mark each patch position in
    the vision features (their mean over some scenes), keys are those features projected on the span of these
    directions, values and output pass the features through. Training then starts from one image token per patch,
    scaled (out_scale) to the size of the text embeddings so the text model does not overlook it.
    """
    vision = model.vision_model
    features = vision.model.post_layernorm(vision(pixel_values=pixel_values).last_hidden_state)
    features = torch.nn.functional.normalize(features, dim=-1)[:, 1:]  # drop CLS: (B, patches, V)
    mean = features.mean(0)
    directions = torch.nn.functional.normalize(mean - mean.mean(0), dim=-1)  # (patches, V)
    proj = model.image_to_text_projection
    attn = proj.x_attn
    v, d, head = directions.shape[1], proj.dense.out_features, attn.head_dim
    basis = torch.linalg.svd(directions, full_matrices=False).Vh[:head]  # (head, V)
    assert directions.shape[0] == proj.latent_query.shape[0] and 2 * v <= d and 2 * head <= v
    for layer in (proj.dense, attn.q_proj, attn.k_proj, attn.v_proj, attn.out_proj):
        layer.weight.zero_()
        layer.bias.zero_()
    proj.dense.weight[:v, :v] = torch.eye(v)  # features go to channels [0, v)
    proj.latent_query.zero_()
    proj.latent_query[:, v : 2 * v] = gamma * directions  # queries live in channels [v, 2v) ...
    for h in range(v // head):  # ... so latent keys (same channels) never match a query
        rows = slice(h * head, (h + 1) * head)
        attn.q_proj.weight[rows, v : 2 * v] = basis
        attn.k_proj.weight[rows, :v] = basis
    attn.v_proj.weight.copy_(torch.eye(d))
    attn.out_proj.weight.copy_(out_scale * torch.eye(d))


def random_scene(rng: random.Random):
    if rng.random() < 0.5:
        width, height = rng.choice(TRAIN_SIZES)
    else:
        width, height = rng.randint(160, 360), rng.randint(160, 360)
    # Two shapes more often than one: telling them apart is what find and refer have to learn.
    img, objs = shapes.make_scene(rng, width, height, n=2 if rng.random() < 0.65 else 1)
    return img, objs, shapes.normalized_boxes(objs, width, height)


def make_example(rng: random.Random, objs, boxes):
    """One training text for a scene: (prompt, full text, prompt bboxes, full bboxes)."""
    task = rng.random()
    if task < 0.4:
        full = shapes.caption(objs)
        if rng.random() < 0.1:
            return DETAIL_PROMPT, full.replace(CAPTION_PROMPT, DETAIL_PROMPT + " An image of"), None, boxes
        return CAPTION_PROMPT, full, None, boxes
    i = rng.randrange(len(objs))
    if task < 0.6:
        return REFER_PROMPT, f"{REFER_PROMPT} {objs[i].phrase}.", [boxes[i]], [boxes[i]]
    prompt = f"<grounding><phrase> {objs[i].phrase}</phrase>"
    return prompt, prompt, None, [boxes[i]]


class ScenePool:
    """Scenes rendered and run through the image processor once, then reused with freshly drawn texts.

    The text side goes through the processor every time (text + bboxes=); only the image block that the processor
    puts in front of every text (<s><image> 64 placeholders </image>) is taken from one call with an image, and
    check() compares the result with plain processor calls.
    """

    def __init__(self, processor: Kosmos2Processor, rng: random.Random, size: int, chunk: int = 64):
        self.processor = processor
        self.scenes, pixels = [], []
        for start in range(0, size, chunk):
            batch = [random_scene(rng) for _ in range(min(chunk, size - start))]
            values = processor.image_processor([img for img, _, _ in batch], return_tensors="pt")["pixel_values"]
            pixels.append(values.half())
            self.scenes += [(objs, boxes) for _, objs, boxes in batch]
        self.pixels = torch.cat(pixels)
        block = processor(text="", images=batch[0][0])
        n = processor.num_image_tokens + 3  # <s> <image> placeholders </image>
        self.block_ids, self.block_mask = block["input_ids"][:n], block["image_embeds_position_mask"][:n]

    def encode(self, texts, bboxes) -> tuple[list[list[int]], list[list[int]]]:
        """input_ids and image_embeds_position_mask for texts with an image, ending with </s>."""
        ids = self.processor(text=texts, bboxes=bboxes, add_eos_token=True)["input_ids"]
        return [self.block_ids + x[1:] for x in ids], [self.block_mask + [0] * (len(x) - 1) for x in ids]

    def check(self, rng: random.Random, n: int = 16) -> None:
        for _ in range(n):
            img, objs, boxes = random_scene(rng)
            _, full, _, full_boxes = make_example(rng, objs, boxes)
            want = self.processor(text=full, images=img, bboxes=full_boxes, add_eos_token=True)
            ids, mask = self.encode([full], [full_boxes])
            assert ids[0] == want["input_ids"] and mask[0] == want["image_embeds_position_mask"], full

    def batch(self, rng: random.Random, batch_size: int) -> dict:
        picks = [rng.randrange(len(self.scenes)) for _ in range(batch_size)]
        examples = [make_example(rng, *self.scenes[i]) for i in picks]
        prompts, fulls, prompt_boxes, full_boxes = map(list, zip(*examples))
        ids, masks = self.encode(fulls, full_boxes)
        # Loss only on the completion: everything up to the end of the prompt is masked.
        prompt_ids = self.encode(prompts, prompt_boxes)[0]
        prompt_lens = [len(x) - 1 for x in prompt_ids]  # without its </s>
        width = max(map(len, ids))
        pad = self.processor.tokenizer.pad_token_id
        batch = {
            "pixel_values": self.pixels[picks].float(),
            "input_ids": torch.tensor([x + [pad] * (width - len(x)) for x in ids]),
            "attention_mask": torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in ids]),
            "image_embeds_position_mask": torch.tensor([m + [0] * (width - len(m)) for m in masks]),
        }
        labels = batch["input_ids"].clone()
        labels[batch["attention_mask"] == 0] = -100
        for row, n in enumerate(prompt_lens):
            assert ids[row][:n] == prompt_ids[row][:n], fulls[row]
            labels[row, :n] = -100
        # Logits only where there are labels: the lm head over every image position is wasted time.
        keep = width - min(prompt_lens) + 1
        batch["labels"], batch["logits_to_keep"] = labels[:, -keep:], keep
        return batch


def _generate(model, processor, images, prompts, bboxes=None) -> list[str]:
    inputs = processor(text=prompts, images=images, bboxes=bboxes, return_tensors="pt")
    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=48, do_sample=False, num_beams=1)
    return processor.batch_decode(out, skip_special_tokens=True)


def evaluate(model, processor, n: int = 100, seed: int = 12345, batch_size: int = 25) -> dict:
    """Caption, refer and find on n held-out scenes through generate + post_process_generation."""
    rng = random.Random(seed)
    scenes = []
    for i in range(n):
        width, height = shapes.CLI_SIZES[i % len(shapes.CLI_SIZES)]
        img, objs = shapes.make_scene(rng, width, height)
        scenes.append((img, objs, shapes.normalized_boxes(objs, width, height), rng.randrange(len(objs))))
    right, ious, shape_right, refer_colour, refer_full, find_ious = 0, [], 0, 0, 0, []
    model.eval()
    for b in range(0, n, batch_size):
        chunk = scenes[b : b + batch_size]
        images = [s[0] for s in chunk]
        captions = _generate(model, processor, images, [CAPTION_PROMPT] * len(chunk))
        refers = _generate(model, processor, images, [REFER_PROMPT] * len(chunk), [[s[2][s[3]]] for s in chunk])
        finds = _generate(
            model,
            processor,
            images,
            [f"<grounding><phrase> {s[1][s[3]].phrase}</phrase>" for s in chunk],
            [None] * len(chunk),
        )
        for (_img, objs, boxes, k), cap, ref, fnd in zip(chunk, captions, refers, finds):
            _, entities = processor.post_process_generation(cap)
            found = {shapes.colour_in(name): (name, bxs) for name, _, bxs in entities}
            right += [shapes.colour_in(name) for name, _, _ in entities] == [o.color for o in objs]
            for obj, box in zip(objs, boxes):
                name, bxs = found.get(obj.color, ("", []))
                ious.append(shapes.iou(bxs[0], box) if bxs else 0.0)
                shape_right += obj.shape in name.split()
            said = processor.post_process_generation(ref)[0]
            refer_colour += shapes.colour_in(said.split(" is ")[-1]) == objs[k].color
            refer_full += said == f"It is {objs[k].phrase}."
            _, entities = processor.post_process_generation(fnd)
            find_ious.append(shapes.iou(entities[0][2][0], boxes[k]) if entities and entities[0][2] else 0.0)
    model.train()
    n_obj = len(ious)
    return {
        "images": n,
        "objects": n_obj,
        "caption_colours_and_count": right / n,
        "caption_mean_iou": sum(ious) / n_obj,
        "caption_iou_ge_0.5": sum(i >= 0.5 for i in ious) / n_obj,
        "caption_shape_accuracy": shape_right / n_obj,
        "refer_colour_accuracy": refer_colour / n,
        "refer_exact": refer_full / n,
        "find_mean_iou": sum(find_ious) / n,
        "find_iou_ge_0.5": sum(i >= 0.5 for i in find_ious) / n,
        "example": [captions[-1].split("</image>")[-1], refers[-1].split("</image>")[-1]],
    }


def param_groups(model, lr: float, vision_lr_scale: float):
    """The vision tower and the image-to-text projection learn slower, or they forget where things are."""
    slow = [
        p for name, p in model.named_parameters() if name.startswith(("vision_model.", "image_to_text_projection."))
    ]
    slow_ids = {id(p) for p in slow}
    fast = [p for p in model.parameters() if id(p) not in slow_ids]
    return [{"params": fast, "lr": lr}, {"params": slow, "lr": lr * vision_lr_scale}]


def lr_scale(step: int, steps: int, warmup: int) -> float:
    """Linear warm-up, then cosine down to 2%."""
    if step <= warmup:
        return step / warmup
    return max(0.5 * (1 + math.cos(math.pi * (step - warmup) / (steps - warmup + 1))), 0.02)


def train(args) -> dict:
    torch.manual_seed(args.seed)
    torch.use_deterministic_algorithms(True)
    rng = random.Random(args.seed)
    processor = build_processor()
    start = time.time()
    pool = ScenePool(processor, rng, args.pool)
    pool.check(rng)
    model = build_model(processor)
    init_vision(model)
    align_resampler(model, pool.pixels[:256].float())
    model.train()
    groups = param_groups(model, args.lr, args.vision_lr_scale)
    optimizer = torch.optim.AdamW(groups, weight_decay=0.01, betas=(0.9, 0.98))
    base = [g["lr"] for g in optimizer.param_groups]
    warmup = min(args.warmup, max(1, args.steps // 10))
    log = open(args.log, "a") if args.log else None

    def say(msg: str) -> None:
        print(msg, flush=True)
        if log:
            log.write(msg + "\n")
            log.flush()

    say(f"pool of {args.pool} scenes in {time.time() - start:.0f}s")
    say(f"params {sum(p.numel() for p in model.parameters()):,}  steps {args.steps}  batch {args.batch_size}")
    running = 0.0
    for step in range(1, args.steps + 1):
        for group, lr in zip(optimizer.param_groups, base):
            group["lr"] = lr * lr_scale(step, args.steps, warmup)
        loss = model(**pool.batch(rng, args.batch_size)).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        running += loss.item()
        if step % args.log_every == 0 or step == args.steps:
            count = args.log_every if step % args.log_every == 0 else step % args.log_every
            say(f"step {step:5d}  loss {running / count:.4f}  elapsed {time.time() - start:7.1f}s")
            running = 0.0
        if args.eval_every and step % args.eval_every == 0 and step < args.steps:
            say(f"step {step:5d}  eval " + json.dumps(evaluate(model, processor, 50)))
    train_s = time.time() - start
    out = Path(args.out)
    processor.save_pretrained(out)
    model.save_pretrained(out)
    say(f"saved {out}  train time {train_s:.0f}s")
    metrics = {"train_seconds": round(train_s), "steps": args.steps, "seed": args.seed}
    if args.eval_images:
        metrics.update(evaluate(model, processor, args.eval_images))
    say("eval " + json.dumps(metrics))
    return metrics


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="folder for config, weights and processor files")
    parser.add_argument("--steps", type=int, default=3500)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--vision-lr-scale", type=float, default=0.1)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pool", type=int, default=8192, help="pre-rendered scenes to draw from")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--log", help="also append progress lines to this file")
    parser.add_argument("--log-every", type=int, default=100)
    parser.add_argument("--eval-every", type=int, default=0, help="also evaluate on 50 scenes every N steps")
    parser.add_argument("--eval-images", type=int, default=100, help="held-out scenes to evaluate on (0: skip)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    train(args)


if __name__ == "__main__":
    main()
