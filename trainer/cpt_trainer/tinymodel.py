"""The tiny base model: a ~1M-parameter Llama with a character-level tokenizer, pre-trained locally.

Why: CPT needs a base model that solves the example tasks sometimes (RL learns nothing from all-zero rewards)
and holds a "general" skill firmly (so forgetting of general capability is measurable). Nothing is downloaded:
the tokenizer is a WordLevel vocabulary of single characters, the weights come from `pretrain`.

Llama, not Qwen2: transformers 5 forces Qwen2Tokenizer onto Qwen2 configs and drops spaces (DESIGN.md section 7).
Pre-training is a plain torch loop (nanochat style): fast on CPU and deterministic given the seed on one
machine. Float rounding differs between CPU types and training a model this small amplifies it, so phase 2
steers by greedy probes (targets and a floor for the general skill), not by fixed step counts.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import string
import time
from dataclasses import asdict, dataclass, field

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from cpt_trainer import synthetic

log = logging.getLogger(__name__)

PAD, BOS, END, UNK = "<pad>", "<s>", "<|end|>", "<unk>"
USER, ASSISTANT, SYSTEM = "<|user|>", "<|assistant|>", "<|system|>"
SPECIALS = [PAD, BOS, END, UNK, USER, ASSISTANT, SYSTEM]
CHARS = [chr(c) for c in range(32, 127)]  # printable ASCII: everything the synthetic tasks and \boxed{} use
CHAT_TEMPLATE = (
    "{% for m in messages %}"
    "{% if m['role'] == 'system' %}<|system|>{{ m['content'] }}"
    "{% elif m['role'] == 'user' %}<|user|>{{ m['content'] }}"
    "{% else %}<|assistant|>{{ m['content'] }}<|end|>{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def build_tokenizer() -> PreTrainedTokenizerFast:
    """Char-level fast tokenizer with a chat template; specials are single tokens."""
    vocab = {tok: i for i, tok in enumerate(SPECIALS + CHARS)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tok.decoder = decoders.Fuse()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token=PAD, bos_token=BOS, eos_token=END, unk_token=UNK,
        additional_special_tokens=[USER, ASSISTANT, SYSTEM], padding_side="left", model_max_length=128,
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


@dataclass
class BaseModelConfig:
    """Size and pre-training recipe of the tiny base. Defaults: ~1M params, a few minutes on 2 CPU cores."""

    hidden_size: int = 128
    layers: int = 4
    heads: int = 4
    intermediate_size: int = 352
    max_positions: int = 64
    steps: int = 1000  # phase 1: the general skill and background knowledge, held firmly
    batch_size: int = 64
    lr: float = 3e-3
    warmup: int = 50
    seed: int = 0
    general: str = "copy"  # the skill held firmly: the general benchmark
    mixture: dict[str, float] = field(default_factory=lambda: {"copy": 0.6, "max": 0.2, "add": 0.2})
    # Phase 2: the example tasks join (with the general skill) until a greedy probe on each reaches its target;
    # a task that reached it stays at the small weight tail_keep (leaving outright lets it decay to 0 while slower
    # tasks catch up); the phase ends when all reached (or after tail_steps). So the base solves each example
    # task partly (RL needs some success) and leaves room to learn.
    targets: dict[str, float] = field(default_factory=lambda: {"reverse": 0.35, "sort": 0.35, "count": 0.35})
    tail_general: float = 0.3
    tail_keep: float = 0.05
    tail_lr: float = 1e-3
    tail_steps: int = 600
    # Phase 2 starts from phase 1's decayed learning rate; jumping straight to tail_lr wiped the general skill
    # in ~10 steps and made the result depend on the CPU's float rounding. Ramp up over tail_warmup steps.
    tail_warmup: int = 20
    probe_every: int = 10
    probe_size: int = 64
    # The general skill must still hold at the end: after the targets are reached, phase 2 goes on with mostly
    # the general skill until its probe is back at general_floor (still within tail_steps).
    general_floor: float = 0.85


def build_model(tokenizer: PreTrainedTokenizerFast, cfg: BaseModelConfig) -> LlamaForCausalLM:
    torch.manual_seed(cfg.seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.layers, num_attention_heads=cfg.heads, num_key_value_heads=cfg.heads,
        max_position_embeddings=cfg.max_positions, tie_word_embeddings=True, rope_theta=10000.0,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id, do_sample=False, max_new_tokens=16)
    return model


def render(tokenizer, prompt, answer: str | None = None) -> str:
    """Chat-formatted text: the generation prompt, plus `\\boxed{answer}<|end|>` when an answer is given."""
    messages = prompt if isinstance(prompt, list) else [{"role": "user", "content": prompt}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return text if answer is None else text + "\\boxed{" + answer + "}" + END


def _batch(tokenizer, rows: list[tuple[str, str]]):
    """Right-padded input ids with labels only on the answer (loss on what the model must produce)."""
    ids, labels = [], []
    for prompt, answer in rows:
        p = tokenizer(render(tokenizer, prompt), add_special_tokens=False)["input_ids"]
        a = tokenizer("\\boxed{" + answer + "}" + END, add_special_tokens=False)["input_ids"]
        ids.append(p + a)
        labels.append([-100] * len(p) + a)
    width = max(map(len, ids))
    pad = tokenizer.pad_token_id
    x = torch.tensor([s + [pad] * (width - len(s)) for s in ids])
    y = torch.tensor([s + [-100] * (width - len(s)) for s in labels])
    return x, y, (x != pad).long()


def _step(model, opt, tokenizer, rows) -> float:
    x, y, mask = _batch(tokenizer, rows)
    loss = model(input_ids=x, attention_mask=mask, labels=y).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss.item()


def pretrain(model, tokenizer, cfg: BaseModelConfig, log_every: int = 100) -> list[dict]:
    """Two phases (see BaseModelConfig), drawing only from each skill's `pretrain` pool. Returns the loss curve."""
    rng = random.Random(cfg.seed)
    torch.manual_seed(cfg.seed)
    all_skills = list(dict.fromkeys([*cfg.mixture, *cfg.targets, cfg.general]))
    streams = {s: synthetic.sample(s, random.Random(f"pretrain:{s}:{cfg.seed}"), "pretrain") for s in all_skills}
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.01, betas=(0.9, 0.95))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / cfg.warmup) * max(0.05, 1 - s / cfg.steps))
    model.train()
    curve = []
    skills, weights = list(cfg.mixture), list(cfg.mixture.values())
    for step in range(cfg.steps):
        loss = _step(model, opt, tokenizer, [next(streams[s]) for s in rng.choices(skills, weights, k=cfg.batch_size)])
        sched.step()
        if step % log_every == 0 or step == cfg.steps - 1:
            curve.append({"step": step, "loss": round(loss, 4)})
            log.info("pretrain step %d/%d loss %.4f", step, cfg.steps, loss)
    curve += _pretrain_tail(model, tokenizer, cfg, opt, rng, streams)
    model.eval()
    return curve


def _pretrain_tail(model, tokenizer, cfg: BaseModelConfig, opt, rng: random.Random, streams: dict) -> list[dict]:
    """Phase 2: each target task up to its target while the general skill stays at general_floor.

    A feedback loop on greedy probes: a skill below its goal gets the larger share of the batch, one at its goal
    a small rehearsal share (leaving outright lets it decay to 0 in a few steps on a model this small); the
    phase ends at the first probe where every goal holds at once, or after tail_steps.
    """
    probes = {s: synthetic.generate(s, cfg.probe_size, seed=cfg.seed + 1, pool="train")
              for s in dict.fromkeys([*cfg.targets, cfg.general])}
    goals = {**cfg.targets, cfg.general: cfg.general_floor}
    curve: list[dict] = []
    for step in range(cfg.tail_steps + 1):
        if step % cfg.probe_every == 0:
            acc = {s: greedy_accuracy(model, tokenizer, probes[s]) for s in probes}
            below = [s for s in goals if acc[s] < goals[s]]
            model.train()
            if step:
                curve.append({"step": cfg.steps + step, "loss": round(loss, 4), "below": below})
            if not below or step == cfg.tail_steps:
                break
        for group in opt.param_groups:
            group["lr"] = cfg.tail_lr * min(1.0, (step + 1) / max(1, cfg.tail_warmup))
        loss = _step(model, opt, tokenizer, [next(streams[s]) for s in _tail_mix(cfg, below, rng)])
    if below:
        log.warning("pretrain tail: after %d steps %s still below the goal (%s)", cfg.tail_steps, below,
                    {s: round(acc[s], 2) for s in below})
    return curve


def _tail_mix(cfg: BaseModelConfig, below: list[str], rng: random.Random) -> list[str]:
    """One batch of skill names: the general skill at tail_general (at least half while it is below its floor),
    targets below their goal share the rest, targets at their goal are rehearsed at tail_keep each."""
    general = cfg.tail_general if cfg.general not in below else max(cfg.tail_general, 0.5)
    active = [s for s in cfg.targets if s in below]
    kept = [s for s in cfg.targets if s not in below]
    if active:
        weights = [cfg.tail_keep] * len(kept) + [(1 - general - cfg.tail_keep * len(kept)) / len(active)] * len(active)
    else:
        weights = [(1 - general) / max(1, len(kept))] * len(kept)
    return rng.choices([cfg.general, *kept, *active], [general, *weights], k=cfg.batch_size)


@torch.no_grad()
def greedy_accuracy(model, tokenizer, rows: list[dict], max_new_tokens: int = 16, batch: int = 128) -> float:
    """Greedy exact-match accuracy of `\\boxed{answer}` on rows (used to report the base's starting point)."""
    from cpt_core.rewards import extract_answer

    model.eval()
    correct = 0
    for k in range(0, len(rows), batch):
        chunk = rows[k:k + batch]
        enc = tokenizer([render(tokenizer, r["prompt"]) for r in chunk], return_tensors="pt", padding=True,
                        add_special_tokens=False)
        out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False)
        texts = tokenizer.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
        correct += sum(extract_answer(t) == r["answer"] for t, r in zip(texts, chunk))
    return correct / max(1, len(rows))


def recipe_hash(config: dict) -> str:
    """What a base's weights depend on besides the CPU: its recipe (BaseModelConfig as a dict) and the code that
    builds it (this module, the synthetic tasks). A benchmark reuses a cached base only under the same hash."""
    digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode())
    for path in (__file__, synthetic.__file__):
        with open(path, "rb") as fh:
            digest.update(fh.read())
    return digest.hexdigest()[:16]


def _machine() -> dict:
    """Where a base was built: its weights depend on the CPU type's float rounding (see the module docstring)."""
    import platform

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            cpu = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), cpu)
    except OSError:
        pass
    return {"cpu": cpu, "torch": torch.__version__, "threads": torch.get_num_threads()}


def build_base(out_dir: str, cfg: BaseModelConfig | None = None, probe: int = 200) -> dict:
    """Build, pre-train and save the tiny base to out_dir (HF format). Returns a report with per-skill accuracy."""
    cfg = cfg or BaseModelConfig()
    t0 = time.time()
    tokenizer = build_tokenizer()
    model = build_model(tokenizer, cfg)
    params = sum(p.numel() for p in model.parameters())
    curve = pretrain(model, tokenizer, cfg)
    acc = {s: round(greedy_accuracy(model, tokenizer, synthetic.generate(s, probe, seed=cfg.seed, pool="eval")), 3)
           for s in dict.fromkeys([cfg.general, *cfg.targets, *cfg.mixture])}
    os.makedirs(out_dir, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    report = {"params": params, "seconds": round(time.time() - t0, 1), "eval_accuracy": acc,
              "config": asdict(cfg), "recipe_hash": recipe_hash(asdict(cfg)), "built_on": _machine(),
              "loss_curve": curve}
    with open(os.path.join(out_dir, "build_report.json"), "w", encoding="utf-8") as fh:
        json.dump(report, fh, indent=1)
    return report
