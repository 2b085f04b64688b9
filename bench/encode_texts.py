"""Raw encoding throughput on a machine without the project's stack (a GPU box, say).

    # here: write the pipeline's exact chunk texts (needs the project's environment)
    .venv/bin/python bench/indexing.py --encode-only --dump-texts out/scifact-chunks.jsonl.gz
    # there: only torch + sentence-transformers needed
    python3 bench/encode_texts.py out/scifact-chunks.jsonl.gz --model DIR [--batch-size 64]

Loads the model the way indexer/embedding.py does (cuda: fp16), encodes every text with
normalised output and prints chunks/s. Same numbers as step 1 of bench/indexing.py.
"""
from __future__ import annotations

import argparse
import gzip
import json
import time


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("texts", help="a .jsonl.gz of {'text': ...} lines from bench/indexing.py --dump-texts")
    parser.add_argument("--model", required=True, help="sentence-transformers model directory")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default=None, help="default: cuda if present, else cpu")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs (the best is reported too)")
    args = parser.parse_args()

    import torch
    from sentence_transformers import SentenceTransformer

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    with gzip.open(args.texts, "rt", encoding="utf-8") as f:
        texts = [json.loads(line)["text"] for line in f]
    model = SentenceTransformer(args.model, device=device)
    if device.startswith("cuda"):
        model.half()
    name = torch.cuda.get_device_name(0) if device.startswith("cuda") else "cpu"
    print(f"device {device} ({name}), torch {torch.__version__}, {len(texts)} chunk texts, "
          f"batch size {args.batch_size}, dtype {next(model.parameters()).dtype}")
    model.encode(texts[: args.batch_size * 4], batch_size=args.batch_size, normalize_embeddings=True)  # warm-up
    times = []
    for _ in range(args.repeat):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        started = time.perf_counter()
        vectors = model.encode(texts, batch_size=args.batch_size, normalize_embeddings=True,
                               convert_to_numpy=True, show_progress_bar=False)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
        print(f"raw model.encode: {times[-1]:.2f} s  {len(texts) / times[-1]:.1f} chunks/s  (shape {vectors.shape})")
    print(f"best: {len(texts) / min(times):.1f} chunks/s")


if __name__ == "__main__":
    main()
