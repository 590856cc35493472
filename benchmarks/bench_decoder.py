"""The fast decoder against generate, on CPU: images/s of the engine's forward with --decoder fast and hf.

    python benchmarks/bench_decoder.py --arch tiny [-n 32] [--batch-size 8] [--max-new-tokens 32]
    python benchmarks/bench_decoder.py --arch full -n 8

Random weights (`Kosmos2Config()` for full, tools/tiny_checkpoint's 2-layer width-64 for tiny), float32. The same
prepared requests (one image each, the brief caption prompt: one prompt length, so generate batches them all) go
through `Engine.forward_scored` of two engines over one loaded model, one per decoder: image features, then
decoding. The end-of-sequence id is set to one no token has, so every row generates exactly --max-new-tokens
tokens on both paths. Both answers are checked token for token before the times are printed; the ratio is
fast images/s over hf images/s, measured in this run.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import tiny_checkpoint  # noqa: E402

from kosmos_cli.model.engine import Engine, GenerationOptions  # noqa: E402
from kosmos_cli.model.prompts import caption_prompt  # noqa: E402


def model_for(arch: str, folder: str):
    import torch
    from transformers import AutoProcessor, Kosmos2Config, Kosmos2ForConditionalGeneration

    if arch == "tiny":
        path = tiny_checkpoint.build_tiny(folder)
        return Kosmos2ForConditionalGeneration.from_pretrained(path).eval(), AutoProcessor.from_pretrained(path)
    torch.manual_seed(0)
    return Kosmos2ForConditionalGeneration(Kosmos2Config()).eval(), tiny_checkpoint.build_processor()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", choices=("tiny", "full"), default="tiny")
    parser.add_argument("-n", type=int, default=32, help="images")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument(
        "--repeat", type=int, default=1, help="passes over the images per decoder, taking turns (best is kept)"
    )
    args = parser.parse_args()

    import torch
    from PIL import Image

    torch.set_grad_enabled(False)
    with tempfile.TemporaryDirectory() as folder:
        model, processor = model_for(args.arch, folder)
    params = sum(p.numel() for p in model.parameters())
    impossible = model.config.text_config.vocab_size + 1  # an end-of-sequence no row ever says
    engines = {}
    for decoder in ("hf", "fast"):
        engine = Engine.from_model(model, processor, GenerationOptions(args.max_new_tokens, decoder=decoder))
        engine._eos = impossible  # noqa: SLF001 - the benchmark makes every row run to max_new_tokens
        engines[decoder] = engine
    images = [Image.new("RGB", (224, 224), (7 * i % 255, 90, 200)) for i in range(args.n)]
    prepared = [engines["hf"].prepare(image, caption_prompt(), image_key=i) for i, image in enumerate(images)]
    batches = [prepared[i : i + args.batch_size] for i in range(0, len(prepared), args.batch_size)]

    engines["fast"].forward_scored(batches[0][:1])  # warm-up, untimed
    engines["hf"].forward_scored(batches[0][:1])
    best, answers = {"hf": float("inf"), "fast": float("inf")}, {}
    for _ in range(args.repeat):  # the decoders take turns, so a busy spell on a shared machine hits both
        for decoder in ("hf", "fast"):
            started = time.perf_counter()
            out = [g for batch in batches for g in engines[decoder].forward_scored(batch)]
            best[decoder] = min(best[decoder], time.perf_counter() - started)
            answers[decoder] = [g.ids for g in out]
    rates = {decoder: args.n / seconds for decoder, seconds in best.items()}
    assert answers["fast"] == answers["hf"], "the decoders disagree"
    assert all(len(ids) >= args.max_new_tokens for ids in answers["fast"])
    print(
        f"arch={args.arch} ({params / 1e6:.1f} M params) images={args.n} batch={args.batch_size} "
        f"new_tokens={args.max_new_tokens} float32 threads={torch.get_num_threads()}"
    )
    print(f"hf   (generate)  {rates['hf']:.3f} images/s")
    print(f"fast (decoder.py) {rates['fast']:.3f} images/s")
    print(f"fast / hf        {rates['fast'] / rates['hf']:.2f}x  (same tokens: yes)")


if __name__ == "__main__":
    main()
