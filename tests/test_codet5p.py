"""codet5p.py on small random configs: against transformers' CodeGen, masks, cross-attention,
loading the official layout through llm.py, the key-value cache."""
import json

import pytest
import torch

from models import codet5p
import data
import llm

ENC = dict(n_embd=32, n_layer=2, n_head=4, rotary_dim=4, n_inner=None, activation_function="gelu_new",
           layer_norm_epsilon=1e-5, vocab_size=300, n_positions=64)
DEC = dict(ENC, n_embd=48, n_layer=3, n_head=4, rotary_dim=6, add_cross_attention=True)
CONFIG = {"model_type": "codet5p", "encoder": ENC, "decoder": DEC, "eos_token_id": 1, "pad_token_id": 0,
          "decoder_start_token_id": 1}


def random_model(seed=0):
    torch.manual_seed(seed)
    model = codet5p.CodeT5p(CONFIG)
    for p in model.parameters():  # LayerNorms and biases too, so nothing is trivially 0 or 1
        torch.nn.init.normal_(p, std=0.2)
    return model.eval()


def test_blocks_equal_transformers_codegen():
    from transformers import CodeGenConfig, CodeGenForCausalLM
    cfg = CodeGenConfig(vocab_size=300, n_embd=48, n_layer=3, n_head=4, rotary_dim=6, n_positions=64, n_ctx=64,
                        bos_token_id=1, eos_token_id=1)
    torch.manual_seed(0)
    ref = CodeGenForCausalLM(cfg).eval()
    for p in ref.parameters():
        torch.nn.init.normal_(p, std=0.2)
    ours = codet5p.Decoder(dict(DEC, add_cross_attention=False)).eval()
    missing, unexpected = ours.load_state_dict(ref.state_dict(), strict=False)
    assert all("crossattention" in k for k in missing) and all("embed_positions" in k or "causal_mask" in k
                                                               for k in unexpected)
    ids = torch.randint(0, 300, (2, 11))
    with torch.no_grad():
        assert torch.allclose(ours(ids)[0], ref(input_ids=ids).logits, atol=1e-5)


def test_encoder_sees_both_ways_decoder_only_back():
    model = random_model()
    x = torch.randn(1, 6, 32)
    y = x.clone()
    y[0, 4] += torch.randn(32)  # change a later position (not by a constant: LayerNorm removes that)
    with torch.no_grad():
        ex, ey = model.encoder(x)[0], model.encoder(y)[0]
        assert not torch.allclose(ex[0, :4], ey[0, :4])  # the encoder's earlier outputs change
        ids = torch.randint(0, 300, (1, 6))
        ids2 = ids.clone()
        ids2[0, 4] = (ids[0, 4] + 1) % 300
        dx, dy = model.decoder(ids)[0], model.decoder(ids2)[0]
        assert torch.allclose(dx[0, :4], dy[0, :4]) and not torch.allclose(dx[0, 4:], dy[0, 4:])


def test_cross_attention_only_in_last_block():
    model = random_model()
    stack = model.decoder.transformer
    h = stack.wte(torch.randint(0, 300, (1, 5)))
    pos, e1, e2 = torch.arange(5), torch.randn(1, 7, 48), torch.randn(1, 7, 48)
    m = torch.ones(1, 7)
    with torch.no_grad():
        for i, block in enumerate(stack.h):
            a, b = block(h, pos, None, True, enc=e1, enc_mask=m)[0], block(h, pos, None, True, enc=e2, enc_mask=m)[0]
            assert torch.equal(a, b) == (i < len(stack.h) - 1)
            h = a
    assert [hasattr(b, "crossattention") for b in stack.h] == [False, False, True]


def test_cache_equals_no_cache():
    model = random_model()
    x, mask = torch.randn(2, 6, 32), torch.tensor([[1] * 6, [1] * 4 + [0] * 2])
    eos = model.config.eos_token_id
    model.config.eos_token_id = -1  # never stop early: compare all 12 steps
    with_cache = model.generate(inputs_embeds=x, attention_mask=mask, max_new_tokens=12)
    without = model.generate(inputs_embeds=x, attention_mask=mask, max_new_tokens=12, use_cache=False)
    model.config.eos_token_id = eos
    assert with_cache.shape == (2, 13) and torch.equal(with_cache, without)


def save_official(model, path, sharded):
    """The official layout: config.json with encoder/decoder sections, attn.causal_mask buffers in the
    state dict, weights as pytorch_model.bin or as index + safetensors shards; a tokenizer beside."""
    path.mkdir()
    json.dump(CONFIG, open(path / "config.json", "w"))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["encoder.h.0.attn.causal_mask"] = torch.ones(1, 1, 64, 64, dtype=torch.uint8)
    if sharded:
        from safetensors.torch import save_file
        keys = sorted(state)
        shards = {"model-00001-of-00002.safetensors": keys[::2], "model-00002-of-00002.safetensors": keys[1::2]}
        for name, ks in shards.items():
            save_file({k: state[k].contiguous() for k in ks}, str(path / name))
        json.dump({"weight_map": {k: n for n, ks in shards.items() for k in ks}},
                  open(path / "model.safetensors.index.json", "w"))
    else:
        torch.save(state, path / "pytorch_model.bin")
    tok = data.build_tokenizer(["sort the list", "x = sorted(x)", "Generate Python code:"] * 20, vocab_size=300)
    tok.save_pretrained(path)
    return tok


@pytest.mark.parametrize("sharded", [False, True])
def test_loads_through_llm_with_identical_logits(tmp_path, sharded):
    model = random_model()
    save_official(model, tmp_path / "m", sharded)
    loaded, tok = llm.load(str(tmp_path / "m"))
    assert isinstance(loaded, codet5p.CodeT5p) and not any(p.requires_grad for p in loaded.parameters())
    x, labels = torch.randn(2, 5, 32), torch.randint(0, 300, (2, 4))
    with torch.no_grad():
        assert torch.equal(loaded(inputs_embeds=x, labels=labels).logits, model(inputs_embeds=x, labels=labels).logits)
    bf16 = codet5p.from_pretrained(str(tmp_path / "m"), dtype=torch.bfloat16)
    assert all(p.dtype == torch.bfloat16 for p in bf16.parameters())


def test_zero_direction_identity(tmp_path):
    model = random_model()
    save_official(model, tmp_path / "m", False)
    model, tok = llm.load(str(tmp_path / "m"))
    text, pairs = "Generate Python code:", [{"nl": "sort the list", "code": "x = sorted(x)"}]
    ex, _ = data.encode(pairs, tok)
    batch = data.collate(ex, tok)
    ids = torch.tensor([tok(text, add_special_tokens=False)["input_ids"] + ex[0][0]])
    ctx = llm.text_context(model, tok, text)
    want = model(input_ids=ids, labels=batch["labels"]).loss
    assert llm.loss(model, ctx, batch).item() == pytest.approx(want.item(), abs=1e-5)
    gen = tok.batch_decode(model.generate(input_ids=ids, max_new_tokens=8), skip_special_tokens=True)[0].strip()
    assert llm.generate(model, tok, ctx, batch, max_new_tokens=8) == [gen]


def test_nucleus_sampling():
    """top_p keeps the smallest set of tokens whose probability reaches it; the draw follows softmax(logits / T)."""
    logits = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log().repeat(20000, 1)
    torch.manual_seed(0)
    counts = torch.bincount(codet5p._nucleus(logits, 1.0, 1.0), minlength=4) / 20000
    assert torch.allclose(counts, torch.tensor([0.5, 0.3, 0.15, 0.05]), atol=0.015), counts
    counts = torch.bincount(codet5p._nucleus(logits, 1.0, 0.75), minlength=4) / 20000  # 0.5 + 0.3 reach 0.75
    assert counts[2:].sum() == 0 and abs(counts[0] - 0.625) < 0.015, counts
    assert (codet5p._nucleus(logits[:5], 1.0, 0.1) == 0).all()  # a tiny nucleus is greedy
    counts = torch.bincount(codet5p._nucleus(logits, 0.5, 1.0), minlength=4) / 20000  # T = 0.5 squares p
    assert abs(counts[0] - 0.25 / (0.25 + 0.09 + 0.0225 + 0.0025)) < 0.015, counts
