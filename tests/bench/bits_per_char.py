#!/usr/bin/env python3
"""Bits per character of held-out posts under model folders, with `botcard score` (f32): the
measure that compares models with different tokenizers (per-token perplexity does not).

    python3 tests/bench/bits_per_char.py POSTS.txt MODEL_DIR...

POSTS.txt holds one post per line (make_archives.py --from-git ... --heldout POSTS.txt writes
posts the archive does not have); each is scored as <|endoftext|>post<|endoftext|>.
"""
import json
import os
import subprocess
import sys

BIN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "target", "release", "botcard")

posts = [line.strip() for line in open(sys.argv[1], encoding="utf-8") if line.strip()]
chars = sum(len(p) for p in posts)
for model in sys.argv[2:]:
    nats = 0.0
    for p in posts:
        out = subprocess.run([BIN, "score", "--model", model, "--dtype", "f32", "--json",
                              "--text", f"<|endoftext|>{p}<|endoftext|>"], check=True, capture_output=True, text=True)
        nats -= sum(json.loads(out.stdout)["logprobs"])
    print(f"{model}: {len(posts)} posts, {chars} chars, {nats / chars / 0.693147:.3f} bits/char")
