"""Writes MODEL_DIR's model.safetensors again as a `pytorch_model.bin` shaped like huggingtweets'
2021 uploads (torch.save of a state dict: `transformer.` names, `lm_head.weight` sharing wte's
storage, the uint8 `attn.bias` masks and `attn.masked_bias`), beside its config and tokenizer in
OUT_DIR, for `./build.sh bench` to load the format most real bots have.
    python tests/bench/pytorch_bin.py MODEL_DIR OUT_DIR   (needs torch and safetensors)"""
import json, os, shutil, sys

import torch
from safetensors.torch import load_file

src, out = sys.argv[1], sys.argv[2]
os.makedirs(out, exist_ok=True)
cfg = json.load(open(os.path.join(src, "config.json")))
sd = {}
for k, v in load_file(os.path.join(src, "model.safetensors")).items():
    sd[k if k.startswith(("transformer.", "lm_head.")) else "transformer." + k] = v
sd["lm_head.weight"] = sd["transformer.wte.weight"]
n = cfg.get("n_positions", 1024)
for i in range(cfg["n_layer"]):
    sd[f"transformer.h.{i}.attn.bias"] = torch.tril(torch.ones(n, n, dtype=torch.uint8)).view(1, 1, n, n)
    sd[f"transformer.h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
torch.save(sd, os.path.join(out, "pytorch_model.bin"))
for f in ("config.json", "tokenizer.json", "vocab.json", "merges.txt"):
    if os.path.exists(os.path.join(src, f)):
        shutil.copy(os.path.join(src, f), os.path.join(out, f))
