"""CodeFusion: CPD masking, the three loss terms, and a seconds-scale run writing its table."""
import json

import torch

from transformers import AutoTokenizer

from runtime import checkpoint
import data
from codefusion import train as train_codefusion
from codefusion.model import MASK, CodeFusion, cpd_mask, valid_syntax



def test_cpd_masks_identifiers_and_keywords_only():
    code = "for x in sorted(my_list, key=len):\n    print('a b', x + 1)  # done"
    want = (f"{MASK} {MASK} {MASK} {MASK}({MASK}, {MASK}={MASK}):\n"
            f"    {MASK}('a b', {MASK} + 1)  # done")
    assert cpd_mask(code, "python") == want
    assert cpd_mask("grep -r 'foo bar' . | wc -l", "bash") == f"{MASK} -r 'foo bar' . | {MASK} -l"
    assert cpd_mask("AND(GreaterThan(25),LessThan(50))", "cf") == f"{MASK}({MASK}(25),{MASK}(50))"


def test_valid_syntax():
    assert valid_syntax("x = [1, 2]", "python") and not valid_syntax("x = [1, 2", "python")
    assert valid_syntax("ls -l | wc -l", "bash") and not valid_syntax("if then fi (", "bash")
    assert valid_syntax("AND(LessThan(5),Blanks())", "cf", {"AND", "LessThan", "Blanks"})
    assert not valid_syntax("AND(LessThan(5)", "cf", {"AND", "LessThan"})
    assert not valid_syntax("Foo(5)", "cf", {"AND"})


def small(vocab=20, d=24):
    torch.manual_seed(0)
    return CodeFusion(vocab=vocab, pad_id=0, d=d, heads=4, enc_layers=1, den_layers=1, dec_layers=1, n=6, max_src=8,
                      T=100)


def test_loss_terms_vanish_where_they_should():
    model = small()
    y, src = torch.randint(1, 20, (3, 6)), torch.randint(1, 20, (3, 5))
    mem, pad = model.encode(src)
    # a perfect denoiser (x0_hat = L(y)) predicts the noise exactly; a decoder passing it on matches L(y)
    model.denoise = lambda x_t, t, m, p: model.L(y)
    model.decode = lambda x0_hat, m, p: x0_hat
    with torch.no_grad():  # and a head that reads tokens back off L: cross-entropy near 0
        model.L.weight.copy_(torch.eye(20, 24) * 10)
        model.H.weight.copy_(torch.eye(20, 24) * 10)
        model.H.bias.zero_()
    terms = model.losses(y, mem, pad, torch.Generator().manual_seed(0))
    assert terms["eps"].item() < 1e-8 and terms["dec"].item() == 0.0 and terms["ce"].item() < 1e-3


def test_each_term_reaches_what_it_trains():
    model = small()
    y, src = torch.randint(1, 20, (3, 6)), torch.randint(1, 20, (3, 5))
    reach = {"eps": ["N.", "L.", "E.", "t_mlp."], "dec": ["D."], "ce": ["H.", "D."]}
    for term, prefixes in reach.items():
        model.zero_grad()
        mem, pad = model.encode(src)
        model.losses(y, mem, pad, torch.Generator().manual_seed(0))[term].backward()
        for prefix in prefixes:
            grads = [p.grad for k, p in model.named_parameters() if k.startswith(prefix)]
            assert any(g is not None and g.abs().sum() > 0 for g in grads), (term, prefix)


def test_seconds_scale_run_writes_its_table(tmp_path, shared):
    train_codefusion.main(["--lang", "cf", "--data-dir", shared("codefusion", fallback=True), "--pretrain-steps", "4", "--finetune-steps", "4",
                           "--limit", "6", "--sample-steps", "5", "--T", "200", "--d", "32", "--layers", "1,1,1",
                           "--n", "16", "--vocab", "300", "--out", str(tmp_path)])
    table = open(tmp_path / "results.md").read()
    for name in ("CodeFusion", "grounding", "no pre-training", "no CPD", "T5, beam search", "T5, sampling",
                 "EM@5", "dist-4", "edit min/max/mean", "t = 200", "t = 0"):
        assert name in table
    rows = json.load(open(tmp_path / "results.json"))["rows"]
    assert all(0 <= r["EM@1"] <= r["EM@3"] <= r["EM@5"] <= 1 for r in rows.values())
    ckpt = checkpoint.load(tmp_path / "codefusion.pt")  # the trained model, loadable without pickle
    tok = AutoTokenizer.from_pretrained(tmp_path / "tokenizer")
    model = CodeFusion.from_checkpoint(ckpt)  # from the checkpoint alone
    assert model.config | {"vocab": len(tok)} == dict(vocab=len(tok), pad_id=tok.pad_token_id, d=32, heads=4, enc_layers=1,
                                                       den_layers=1, dec_layers=1, n=16, max_src=64, T=200)
    assert ckpt["run"]["lang"] == "cf" and MASK in tok.get_vocab()


def test_pretrained_encoder_is_loaded_and_used(tmp_path, shared):
    """--encoder: a T5 checkpoint saved with save_pretrained becomes E (weights as saved, its
    tokenizer for utterances and code, <mask> added); the width is projected to --d; a run ends
    with its table."""
    from transformers import T5Config, T5ForConditionalGeneration
    tok = data.build_tokenizer(["color cells greater than 5", "GreaterThan(5)", "LessThan(3)"], 300)
    torch.manual_seed(0)
    t5 = T5ForConditionalGeneration(T5Config(vocab_size=len(tok), d_model=48, d_kv=12, d_ff=64, num_layers=1,
                                             num_heads=4, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0))
    t5.save_pretrained(tmp_path / "ckpt")
    tok.save_pretrained(tmp_path / "ckpt")
    argv = ["--lang", "cf", "--data-dir", shared("codefusion", fallback=True), "--encoder", str(tmp_path / "ckpt"), "--d", "32", "--layers", "1,1,1",
            "--n", "16", "--T", "200", "--limit", "4", "--sample-steps", "5", "--out", str(tmp_path / "run")]
    args = train_codefusion.parse(argv + ["--pretrain-steps", "0", "--finetune-steps", "0"])
    tok2 = __import__("transformers").AutoTokenizer.from_pretrained(args.encoder)
    tok2.add_special_tokens({"additional_special_tokens": [MASK]})
    model = train_codefusion.train_diffusion(args, tok2, {"snippets": [], "train": []}, pretrain=False, cpd=False,
                                              log=None)
    saved = t5.get_input_embeddings().weight
    assert torch.equal(model.E.get_input_embeddings().weight[:len(tok)], saved)
    assert model.E.get_input_embeddings().num_embeddings == len(tok) + 1  # room for <mask>
    src = torch.tensor([tok("color cells greater than 5", add_special_tokens=False)["input_ids"]])
    mem, _ = model.encode(src)
    want = model.E_proj(t5.eval().encoder(input_ids=src).last_hidden_state)
    assert mem.shape[-1] == 32 and torch.allclose(mem, want, atol=1e-5)
    train_codefusion.main(argv + ["--pretrain-steps", "3", "--finetune-steps", "3"])
    assert "T5, beam search" in open(tmp_path / "run" / "results.md").read()


def test_sampling_ddpm_ddim_and_trajectory():
    model = small().eval()
    src = torch.randint(1, 20, (3, 5))
    g = lambda: torch.Generator().manual_seed(1)
    ddpm, ddim = model.sample(src, k=2, generator=g()), model.sample(src, k=2, steps=10, generator=g())
    assert ddpm.shape == ddim.shape == (6, 6) and torch.equal(ddim, model.sample(src, k=2, steps=10, generator=g()))
    path = list(model.trajectory(src, k=2, generator=g()))  # DDPM: x_T, then every step down to the sample
    assert [s for s, *_ in path] == list(range(100, -1, -1))
    s, x0, mem, pad = path[-1]
    assert torch.equal(model.tokens(x0, mem, pad), ddpm)
