"""Golden files for SigLIP / SigLIP2: tiny open_clip models with their tokenizers, tokenizer ids, SigLipLoss.

    python tools/gen_golden_siglip.py testdata
    python tools/gen_golden_siglip.py --zoo-table      # prints the size table of testdata/models/SIGLIP_NOTES.md

Needs `sentencepiece` (to train the two small tokenizers) on top of tools/requirements.txt. Nothing is
downloaded: the Hugging Face Hub is not used.

Models (open_clip `CustomTextCLIP`, built by open_clip's own factory code from the folder's config; every parameter
re-drawn O(1) by `randomize`, logit_scale and logit_bias included):
  models/siglip_openclip_hub   ViT-B-16-SigLIP in small: vision = open_clip `TimmModel` around timm's
                               `vit_base_patch16_siglip_224` (class_token=False, global_pool='map', exact GELU,
                               LayerNorm eps 1e-6, timm_proj 'none') shrunk to img 32, patch 8, width 32, depth 2,
                               4 heads; text = open_clip `TextTransformer` as in ViT-B-16-SigLIP.json (no causal mask,
                               pool 'last', Linear projection with bias, LayerNorm eps 1e-6, exact GELU), context 16,
                               width 32, 2 heads, 2 layers, vocab = the tokenizer's (T5-style Unigram, 500 pieces).
  models/siglip2_openclip_hub  ViT-SO400M-16-SigLIP2-256 in small: SigLIP2 differs from SigLIP in the text MLP
                               activation (`act_kwargs: {approximate: tanh}`) and the tokenizer (Gemma-style BPE with
                               byte fallback, pad 0 / eos 1); the trunk is timm's `vit_so400m_patch16_siglip_256`
                               (GELU-tanh in the blocks and the MAP head, mlp_ratio 3.7362 -> int(32*3.7362) = 119)
                               shrunk to img 24, patch 8, width 32, depth 2, 2 heads; text width 24 (≠ embed_dim 32, as
                               in ViT-gopt-16-SigLIP2), 2 heads, 2 layers, mlp int(24*3.7362) = 89, context 16,
                               vocab = the tokenizer's (700).
  Each folder is laid out as an open_clip Hub repository: `open_clip_config.json` ({"model_cfg", "preprocess_cfg"},
  preprocess as open_clip's `_slpcfg`: mean = std = 0.5, bicubic, resize_mode 'squash'), `open_clip_model.safetensors`
  (state-dict keys exactly those of the real checkpoints, checked against the full-size model built on the meta
  device), and the tokenizer files `tokenizer.json`, `tokenizer_config.json`, `special_tokens_map.json`.
  timm cannot be given sizes through open_clip's config, so the trunk is built with `timm.create_model` patched to
  build the test trunk names `test_siglip_tiny` / `test_siglip2_tiny` as the real trunks above with the size
  overrides; the config names that test trunk and states its sizes with open_clip's own ViT keys (`width`, `layers`,
  `patch_size`, `head_width`, `mlp_ratio`, and `act_kwargs` for the GELU-tanh trunk) — a name clip-model's timm
  table does not have, so it builds the trunk from those keys (for a known name the table's sizes are used and
  contradicting keys are an error).
  `golden.safetensors`: `image` [2,3,S,S] f32, `text` [3,16] int64 (open_clip's HFTokenizer on three captions, one
  truncated), `image_features`, `text_features` (unnormalised, encode_image/encode_text(normalize=False)),
  `logits_per_image` (= `model.get_logits`: logit_scale.exp() * norm(img) @ norm(txt).T + logit_bias),
  `logit_scale` (the raw parameter, [1]) and `logit_bias` ([1]).

Tokenizers (the real ones are on the Hub: T5's cc_en.32000 SentencePiece model for SigLIP, Gemma's for SigLIP2):
  a SentencePiece model is trained here on testdata/tokenizer/corpus.txt (lines that are ≥90% ASCII, raw and
  canonicalised), then converted with transformers' own converters (`T5Converter`: Unigram, nmt_nfkc Precompiled
  normalizer, Metaspace prepend_scheme 'first', `$A </s>`; `GemmaConverter`: BPE with byte fallback, no normalizer but
  ' ' -> '▁', `$A <eos>` as GemmaTokenizerFast(add_bos_token=False, add_eos_token=True) sets it), with the
  tokenizer_config.json / special_tokens_map.json of open_clip's `SigLipTokenizer` (T5: extra_ids 0, pad = eos =
  '</s>' (id 1); Gemma: pad '<pad>' (0), eos '<eos>' (1), padding right).
  tokenizer/siglip_ids.json, tokenizer/siglip2_ids.json: [{"text", "ids"}] for 200+ texts, `ids` = open_clip's
  `get_tokenizer('local-dir:<model folder>')` (HFTokenizer, clean='canonicalize') with context_length 64, i.e. the
  padded row open_clip feeds the model. Checked equal to the bare `tokenizers` pipeline of tokenizer.json.

train/siglip_loss.safetensors: open_clip `SigLipLoss()` (one process) on L2-normalised features; per case `caseN.`
  `image_features` [B,E], `text_features` [B,E], `logit_scale` [1] (the exp'd scale, as passed to the loss),
  `logit_bias` [1], `loss` [1], and `grad_image_features`, `grad_text_features`, `grad_logit_scale`,
  `grad_logit_bias` (autograd w.r.t. exactly those inputs). Computed in float64 from the float32 inputs, stored float32
  (the float32 run is checked to agree to 1e-5). case0 B=4 E=8 at SigLIP's init (scale 10, bias -10); case1 B=7 E=5
  (scale e^2.9, bias -3.3); case2 B=6 E=4, scale 100, bias 5, with duplicated rows so that some |logits| reach 105
  (a naive log(sigmoid(x)) overflows there).
"""
import contextlib
import io
import json
import math
import os
import re
import sys
import tempfile

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

CTX = 16
IDS_CTX = 64
T5_VOCAB = 500
GEMMA_VOCAB = 700
PREPROCESS_CFG = {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "interpolation": "bicubic",
                  "resize_mode": "squash"}
CAPTIONS = ["A photo of a dog.", "two cats sleeping on a red sofa!",
            "a very long caption about a busy street market with many people, bicycles, fruit stands, "
            "umbrellas and a small brown dog sleeping under a wooden table"]


# ----------------------------------------------------------------------------------------------- tokenizers

def training_lines(root):
    from open_clip.tokenizer import basic_clean, canonicalize_text
    with open(os.path.join(root, "tokenizer", "corpus.txt"), encoding="utf-8") as f:
        lines = f.read().split("\n")
    lines = [l for l in lines if l.strip() and sum(c.isascii() for c in l) >= 0.9 * len(l)]
    return lines + [canonicalize_text(basic_clean(l)) for l in lines]


def train_spm(lines, **kwargs):
    import sentencepiece as spm
    out = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(lines), model_writer=out, num_threads=1, minloglevel=2,
                                   **kwargs)
    return out.getvalue()


class _SlowStub:
    """What transformers' converters read from a slow tokenizer."""

    def __init__(self, vocab_file, **attrs):
        self.vocab_file = vocab_file
        self.__dict__.update(attrs)
        from sentencepiece import SentencePieceProcessor
        self._sp = SentencePieceProcessor(model_file=vocab_file)

    def convert_tokens_to_ids(self, token):
        return self._sp.piece_to_id(token)


def _added(content, special=True):
    return {"content": content, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False,
            "special": special}


def _token_map(content):
    return {k: v for k, v in _added(content).items() if k != "special"}


def write_t5_tokenizer(folder, lines):
    """SigLIP: T5-style SentencePiece Unigram (nmt_nfkc), as open_clip's SigLipTokenizer('c4-en') saves it."""
    from tokenizers import AddedToken
    from transformers.convert_slow_tokenizer import T5Converter
    model = train_spm(lines, model_type="unigram", vocab_size=T5_VOCAB, pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
                      normalization_rule_name="nmt_nfkc", character_coverage=0.98)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "spiece.model")
        with open(path, "wb") as f:
            f.write(model)
        tok = T5Converter(_SlowStub(path, _extra_ids=0, legacy=False)).converted()
    tok.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in ("<pad>", "</s>", "<unk>")])
    tok.save(os.path.join(folder, "tokenizer.json"))
    config = {
        "added_tokens_decoder": {str(i): _added(t) for i, t in enumerate(["<pad>", "</s>", "<unk>"])},
        "additional_special_tokens": [],
        "clean_up_tokenization_spaces": True,
        "eos_token": "</s>",
        "extra_ids": 0,
        "legacy": False,
        "model_max_length": 1000000000000000019884624838656,
        "pad_token": "</s>",
        "sp_model_kwargs": {},
        "tokenizer_class": "T5Tokenizer",
        "unk_token": "<unk>",
    }
    write_json(os.path.join(folder, "tokenizer_config.json"), config)
    write_json(os.path.join(folder, "special_tokens_map.json"),
               {"eos_token": _token_map("</s>"), "pad_token": _token_map("</s>"), "unk_token": _token_map("<unk>")})
    return tok.get_vocab_size()


GEMMA_USER_DEFINED = ["<mask>", "[@BOS@]", "<unused0>", "<unused1>", "<start_of_turn>", "<end_of_turn>", "\n", "\n\n",
                      "\t", "▁▁", "▁▁▁", "<table>", "<b>"]


def write_gemma_tokenizer(folder, lines):
    """SigLIP2: Gemma-style SentencePiece BPE (byte fallback, digits split, no normalisation, whitespace-only
    pieces), as open_clip's SigLipTokenizer('gemma') saves it (GemmaTokenizerFast, add_bos_token=False,
    add_eos_token=True, padding_side='right', pad id 0, eos id 1)."""
    from sentencepiece import SentencePieceProcessor
    from tokenizers import processors
    from transformers.convert_slow_tokenizer import GemmaConverter, GemmaSentencePieceExtractor

    class Extractor(GemmaSentencePieceExtractor):  # transformers 5 lost the `sp` attribute its `extract` reads
        def __init__(self, model):
            super().__init__(model)
            self.sp = SentencePieceProcessor(model_file=model)

    class Converter(GemmaConverter):
        SpmExtractor = Extractor

    model = train_spm(lines, model_type="bpe", vocab_size=GEMMA_VOCAB, pad_id=0, eos_id=1, bos_id=2, unk_id=3,
                      pad_piece="<pad>", eos_piece="<eos>", bos_piece="<bos>", unk_piece="<unk>",
                      user_defined_symbols=GEMMA_USER_DEFINED, byte_fallback=True, split_digits=True,
                      allow_whitespace_only_pieces=True, normalization_rule_name="identity", add_dummy_prefix=False,
                      remove_extra_whitespaces=False, character_coverage=0.98)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "tokenizer.model")
        with open(path, "wb") as f:
            f.write(model)
        tok = Converter(_SlowStub(path, pad_token="<pad>", eos_token="<eos>", bos_token="<bos>",
                                       legacy=False)).converted()
    tok.post_processor = processors.TemplateProcessing(single="$A:0 <eos>:0", pair="$A:0 <eos>:0 $B:1 <eos>:1",
                                                       special_tokens=[("<eos>", 1)])
    tok.save(os.path.join(folder, "tokenizer.json"))
    vocab = tok.get_vocab()
    specials = ["<pad>", "<eos>", "<bos>", "<unk>"]
    decoder = {str(vocab[t]): _added(t) for t in specials}
    for t in GEMMA_USER_DEFINED:
        decoder[str(vocab[t])] = _added(t, special=t in ("<mask>", "[@BOS@]", "<start_of_turn>", "<end_of_turn>"))
    config = {
        "add_bos_token": False,
        "add_eos_token": True,
        "added_tokens_decoder": decoder,
        "additional_special_tokens": ["<start_of_turn>", "<end_of_turn>"],
        "bos_token": "<bos>",
        "clean_up_tokenization_spaces": False,
        "eos_token": "<eos>",
        "legacy": False,
        "mask_token": "<mask>",
        "model_max_length": 1000000000000000019884624838656,
        "pad_token": "<pad>",
        "padding_side": "right",
        "sp_model_kwargs": {},
        "spaces_between_special_tokens": False,
        "tokenizer_class": "GemmaTokenizer",
        "unk_token": "<unk>",
        "use_default_system_prompt": False,
    }
    write_json(os.path.join(folder, "tokenizer_config.json"), config)
    write_json(os.path.join(folder, "special_tokens_map.json"), {
        "additional_special_tokens": ["<start_of_turn>", "<end_of_turn>"], "bos_token": _token_map("<bos>"),
        "eos_token": _token_map("<eos>"), "mask_token": _token_map("<mask>"), "pad_token": _token_map("<pad>"),
        "unk_token": _token_map("<unk>")})
    return tok.get_vocab_size()


def ids_corpus(root):
    """~200 varied texts: every 40th line of corpus.txt plus hand-picked edge cases."""
    with open(os.path.join(root, "tokenizer", "corpus.txt"), encoding="utf-8") as f:
        lines = f.read().split("\n")
    texts = [l for l in lines[::40] if l]
    texts += [
        "", " ", "   ", "\t\n\r", "\u3000", "a", "A", "I", "_", "__", "snake_case_name", "__init__.py",
        "a_b_c d_e", "hello_world_", "_leading underscore", "   leading and trailing spaces   ",
        "multiple    inner     spaces", "tab\tseparated\twords", "new\nline\r\nwindows", "non\u00a0breaking space",
        "ideographic\u3000space", "zero\u200bwidth\u200cjoiner\u200d", "soft\u00adhyphen", "\ufeffBOM at start",
        "UPPER lower MiXeD CaSe", "don't stop believin'", "it's a dog's life", "Hello, World!", "!!!", "...", "?",
        "a.b.c", "e.g. i.e. etc.", "(parentheses) [brackets] {braces} <angles>", "quote \"double\" 'single'",
        "‘curly’ “quotes” «guillemets» „low“", "em—dash en–dash minus−sign", "ellipsis… and · middle dot",
        "12345", "3.14159", "2021-03-26", "10am 5pm 24h", "$100 & 50% off #1 @home", "1,000,000 people",
        "x² + y³ = z¹", "½ ¼ ¾", "①②③ ⑴⑵", "Ⅻ ⅷ", "㎏ ㎞ ㍿", "™ © ®", "ℌℍ ℝ ℕ", "ﬁ ﬂ ﬀ ﬃ", "ＦＵＬＬ ｗｉｄｔｈ ０１２",
        "´ acute ¨ diaeresis ¸ cedilla", "˜tilde ˆcircumflex", "café", "cafe\u0301", "naïve résumé façade",
        "straße STRASSE", "İstanbul ıi", "ΣΟΦΟΣ σοφος", "ǅ ǈ ǋ", "Ångström Øresund Dvořák", "ĳ Ŀ ŉ",
        "日本語のテキスト", "中文字符测试", "한국어 텍스트", "Привет, мир!", "Γειά σου κόσμε", "مرحبا بالعالم",
        "שלום עולם", "नमस्ते दुनिया", "สวัสดีชาวโลก", "ｶﾀｶﾅ ﾊﾟﾋﾟ", "emoji 🙂😂👍🏽", "flags 🇫🇷🇯🇵", "family 👩‍👩‍👧",
        "❤️ heart ☕ coffee", "&amp; &lt;tag&gt; &quot;q&quot;", "&amp;amp;", "<html><b>bold</b></html>",
        "<pad> </s> <unk> <eos> <bos> <mask>", "<start_of_turn>user<end_of_turn>", "ab</s>cd", "▁ metaspace ▁▁ x",
        "\x00 nul \x07 bell \x7f del", "info\x1cseparators\x1dare\x1eisspace\x1fin python",
        "vertical\x0btab form\x0cfeed", "line\u2028separator paragraph\u2029separator next\x85line",
        "\u0301 leading combining mark", "combining\u0327 \u0308x",
        "Ã©tÃ© mojibake ZÃ¼rich", "\u202eright-to-left override", "supercalifragilisticexpialidocious",
        "pneumonoultramicroscopicsilicovolcanoconiosis", "a" * 100, "ab " * 40,
        "word " * 70, "a photo of a " + "very " * 60 + "big dog",
        " ".join(str(i) for i in range(80)), "-" * 30 + "x" + "_" * 30,
        "The quick brown fox jumps over the lazy dog. " * 3,
        "a photo of a {}.", "itap of a cat", "a bad photo of the dog.",
        "A PHOTO OF A CAR?", "there's a bicycle in the picture",
    ]
    return texts


def tokenizer_ids(folder, texts, pad_id):
    """open_clip's own path: get_tokenizer('local-dir:...') -> HFTokenizer(folder, clean='canonicalize'),
    cross-checked against the bare tokenizer.json (clean, encode, truncate with room for the end token, pad)."""
    import open_clip
    from tokenizers import Tokenizer
    tok = open_clip.get_tokenizer("local-dir:" + folder)
    assert type(tok).__name__ == "HFTokenizer", type(tok)
    ids = tok(texts, context_length=IDS_CTX)
    bare = Tokenizer.from_file(os.path.join(folder, "tokenizer.json"))
    bare.enable_truncation(IDS_CTX)
    bare.enable_padding(length=IDS_CTX, pad_id=pad_id, pad_token=bare.id_to_token(pad_id))
    ref = torch.tensor([e.ids for e in bare.encode_batch([tok.clean_fn(t) for t in texts])])
    bad = [(t, a.tolist(), b.tolist()) for t, a, b in zip(texts, ids, ref) if not torch.equal(a, b)]
    assert not bad, f"HFTokenizer and bare tokenizer.json disagree: {bad[:3]}"
    return tok, ids


def write_ids(path, texts, ids):
    entries = [json.dumps({"text": t, "ids": row.tolist()}, ensure_ascii=False) for t, row in zip(texts, ids)]
    with open(path, "w", encoding="utf-8") as f:
        f.write("[\n" + ",\n".join(entries) + "\n]\n")


# ----------------------------------------------------------------------------------------------- models

# The tiny trunks' names (not timm's: timm has no such models), each the real trunk it shrinks
TEST_TRUNKS = {"test_siglip_tiny": "vit_base_patch16_siglip_224",
               "test_siglip2_tiny": "vit_so400m_patch16_siglip_256"}
# and the sizes each is built with
TRUNK_OVERRIDES = {"test_siglip_tiny": dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=4),
                   "test_siglip2_tiny": dict(img_size=24, patch_size=8, embed_dim=32, depth=2, num_heads=2)}


@contextlib.contextmanager
def timm_overrides(**overrides):
    """open_clip's TimmModel passes no size arguments to timm: while active, timm.create_model builds a
    test trunk name as its real trunk with the size overrides."""
    import timm
    create = timm.create_model

    def patched(name, **kwargs):
        assert name in TEST_TRUNKS, name
        return create(TEST_TRUNKS[name], **{**kwargs, **overrides})

    timm.create_model = patched
    try:
        yield
    finally:
        timm.create_model = create


def randomize(model, seed):
    """Replace every parameter with values that keep activations O(1) and make every branch matter (the
    references zero-init biases and use small embeddings); logit_scale / logit_bias are drawn too."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name == "logit_scale":
                p.fill_(math.log(10) + 0.3 * float(torch.randn((), generator=g)))
            elif name == "logit_bias":
                p.fill_(-10 + 4 * float(torch.rand((), generator=g)))
            elif "embedding" in name or "pos_embed" in name or name.endswith("latent"):
                p.copy_(0.5 * torch.randn(p.shape, generator=g))
            elif p.dim() >= 2:
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p[0].numel()))
            elif name.endswith("weight"):  # norm gains
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=g))
            else:  # biases
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
    return model.eval()


def check_keys_like_real(model, real_name):
    """Same state-dict keys (block indices aside) and tensor ranks as open_clip's full-size model."""
    import open_clip
    real = open_clip.create_model(real_name, device="meta").state_dict()

    def shape_by_key(sd):
        out = {}
        for k, v in sd.items():
            out.setdefault(re.sub(r"\.(blocks|resblocks)\.\d+\.", r".\1.N.", k), v.dim())
        return out

    ours = model.state_dict()
    assert shape_by_key(ours) == shape_by_key(real), set(shape_by_key(ours)) ^ set(shape_by_key(real))
    return sorted(ours)


def model_case(root, name, real_name, model_cfg, trunk, seed, image_size, pad_id):
    import open_clip
    from safetensors.torch import load_file
    d = os.path.join(root, "models", name)
    write_json(os.path.join(d, "open_clip_config.json"), {"model_cfg": model_cfg, "preprocess_cfg": PREPROCESS_CFG})
    weights = os.path.join(d, "open_clip_model.safetensors")
    with timm_overrides(**trunk):
        model = open_clip.create_model("local-dir:" + d, load_weights=False)  # open_clip's factory builds it
    assert type(model).__name__ == "CustomTextCLIP"
    randomize(model, seed)
    check_keys_like_real(model, real_name)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, weights)
    with timm_overrides(**trunk):  # reload the folder through open_clip, strict
        model = open_clip.create_model("local-dir:" + d).eval()
    sd = load_file(weights)
    assert all(torch.equal(v, sd[k]) for k, v in model.state_dict().items())

    tokenizer = open_clip.get_tokenizer("local-dir:" + d)
    text = tokenizer(CAPTIONS)
    assert text.shape == (3, CTX) and text.dtype == torch.long
    assert (text[2, :-1] != pad_id).all(), "the long caption should fill the context"
    image = torch.randn(2, 3, image_size, image_size, generator=torch.Generator().manual_seed(seed + 1))
    with torch.no_grad():
        fi = model.encode_image(image)
        ft = model.encode_text(text)
        logits, _ = model.get_logits(image, text)
        manual = model.logit_scale.exp() * F.normalize(fi, dim=-1) @ F.normalize(ft, dim=-1).T + model.logit_bias
    assert torch.allclose(logits, manual, atol=1e-5)
    save_file({
        "image": image.contiguous(),
        "text": text.contiguous(),
        "image_features": fi.contiguous(),
        "text_features": ft.contiguous(),
        "logits_per_image": logits.contiguous(),
        "logit_scale": model.logit_scale.detach().reshape(1).clone(),
        "logit_bias": model.logit_bias.detach().reshape(1).clone(),
    }, os.path.join(d, "golden.safetensors"))
    print(f"{name}: {sum(p.numel() for p in model.parameters())} parameters, logits\n{logits}")
    return model


def siglip_cfg(vocab):
    return {
        "embed_dim": 32,
        "init_logit_bias": -10,
        "custom_text": True,
        "vision_cfg": {
            "image_size": 32,
            "timm_model_name": "test_siglip_tiny",
            "timm_model_pretrained": False,
            "timm_pool": "map",
            "timm_proj": "none",
            "width": 32, "layers": 2, "patch_size": 8, "head_width": 8, "mlp_ratio": 4.0,
        },
        "text_cfg": {
            "context_length": CTX,
            "vocab_size": vocab,
            "hf_tokenizer_name": "timm/ViT-B-16-SigLIP",
            "tokenizer_kwargs": {"clean": "canonicalize"},
            "width": 32,
            "heads": 2,
            "layers": 2,
            "no_causal_mask": True,
            "proj_bias": True,
            "pool_type": "last",
            "norm_kwargs": {"eps": 1e-6},
        },
    }


def siglip2_cfg(vocab):
    return {
        "embed_dim": 32,
        "init_logit_bias": -10,
        "custom_text": True,
        "vision_cfg": {
            "image_size": 24,
            "timm_model_name": "test_siglip2_tiny",
            "timm_model_pretrained": False,
            "timm_pool": "map",
            "timm_proj": "none",
            "width": 32, "layers": 2, "patch_size": 8, "head_width": 16, "mlp_ratio": 3.7362,
            "act_kwargs": {"approximate": "tanh"},
        },
        "text_cfg": {
            "context_length": CTX,
            "vocab_size": vocab,
            "hf_tokenizer_name": "timm/ViT-SO400M-16-SigLIP2-256",
            "tokenizer_kwargs": {"clean": "canonicalize"},
            "width": 24,
            "heads": 2,
            "layers": 2,
            "mlp_ratio": 3.7362,
            "no_causal_mask": True,
            "proj_bias": True,
            "pool_type": "last",
            "norm_kwargs": {"eps": 1e-6},
            "act_kwargs": {"approximate": "tanh"},
        },
    }


# ----------------------------------------------------------------------------------------------- loss

def loss_cases(out):
    from open_clip.loss import SigLipLoss
    tensors = {}
    specs = [(4, 8, math.log(10), -10.0, None), (7, 5, 2.9, -3.3, None), (6, 4, math.log(100), 5.0, "dup")]
    for i, (b, e, log_scale, bias, kind) in enumerate(specs):
        g = torch.Generator().manual_seed(100 + i)
        img = F.normalize(torch.randn(b, e, generator=g), dim=-1)
        txt = F.normalize(torch.randn(b, e, generator=g), dim=-1)
        if kind == "dup":  # image 1 = image 0 and text i = image i for i < 3: logits ±105 on and off the diagonal
            img[1] = img[0]
            txt[:3] = img[:3]
        scale = torch.tensor(math.exp(log_scale), dtype=torch.float32)
        bias_t = torch.tensor(bias, dtype=torch.float32)
        leaves = [t.double().clone().requires_grad_(True) for t in (img, txt, scale, bias_t)]
        loss = SigLipLoss()(*leaves)
        loss.backward()
        loss32 = SigLipLoss()(img, txt, scale, bias_t)
        assert abs(loss32.item() - loss.item()) <= 1e-5 * max(1.0, abs(loss.item())), (loss32, loss)
        p = f"case{i}."
        tensors.update({
            p + "image_features": img, p + "text_features": txt, p + "logit_scale": scale.reshape(1),
            p + "logit_bias": bias_t.reshape(1), p + "loss": loss.detach().float().reshape(1),
            p + "grad_image_features": leaves[0].grad.float(), p + "grad_text_features": leaves[1].grad.float(),
            p + "grad_logit_scale": leaves[2].grad.float().reshape(1),
            p + "grad_logit_bias": leaves[3].grad.float().reshape(1),
        })
        print(f"siglip loss case{i}: B={b} E={e} loss={loss.item():.6f}")
    save_file({k: v.contiguous() for k, v in tensors.items()}, os.path.join(out, "siglip_loss.safetensors"))


# ----------------------------------------------------------------------------------------------- zoo table

def zoo_table():
    """Sizes of every SigLIP / SigLIP2 config with a pretrained tag, read from models built on the meta device."""
    import open_clip
    rows = []
    for name, tag in open_clip.list_pretrained():
        if "siglip" not in name.lower():
            continue
        cfg = open_clip.get_model_config(name)
        if "hf_model_name" in cfg["text_cfg"]:  # nllb-clip-*-siglip: a transformers text tower (NLLB), not built
            rows.append(f"| `{name}:{tag}` | {cfg['vision_cfg']['timm_model_name']} | "
                        f"{cfg['vision_cfg']['image_size']} | (as the timm trunk) | | | {cfg['embed_dim']} | "
                        f"HF `{cfg['text_cfg']['hf_model_name']}`, {cfg['text_cfg']['hf_pooler_type']}, "
                        f"{cfg['text_cfg']['hf_proj_type']} proj | | | | | same |")
            continue
        m = open_clip.create_model(name, device="meta")
        t, x = m.visual.trunk, m.text
        blk = t.blocks[0]
        proj = x.text_projection
        rows.append("| `{}:{}` | {} | {} | {}/{}/{}/{} | {} | {} | {} | {}/{}/{}/{} | {} | {} | {} | {} | {} |".format(
            name, tag, cfg["vision_cfg"]["timm_model_name"], cfg["vision_cfg"]["image_size"],
            t.embed_dim, len(t.blocks), blk.attn.num_heads, blk.mlp.fc1.out_features,
            t.patch_embed.patch_size[0], "tanh" if "Tanh" in type(blk.mlp.act).__name__ or
            getattr(blk.mlp.act, "approximate", "none") == "tanh" else "exact",
            m.embed_dim if hasattr(m, "embed_dim") else cfg["embed_dim"],
            x.width, len(x.transformer.resblocks), x.heads, x.transformer.resblocks[0].mlp.c_fc.out_features,
            x.context_length, x.vocab_size,
            {"none": "exact"}.get(x.transformer.resblocks[0].mlp.gelu.approximate, "tanh"),
            "none" if proj is None else "Linear+bias" if isinstance(proj, torch.nn.Linear) else "matrix",
            cfg["text_cfg"].get("hf_tokenizer_name", cfg["text_cfg"].get("hf_model_name"))))
    print("| name:tag | timm trunk | image | vision width/depth/heads/mlp | patch | vision GELU | embed_dim | "
          "text width/layers/heads/mlp | context | vocab | text GELU | text proj | tokenizer |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))


# ----------------------------------------------------------------------------------------------- main

def write_json(path, obj):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, ensure_ascii=False)
        f.write("\n")


def main(root):
    lines = training_lines(root)
    texts = ids_corpus(root)

    d1 = os.path.join(root, "models", "siglip_openclip_hub")
    os.makedirs(d1, exist_ok=True)
    v1 = write_t5_tokenizer(d1, lines)
    trunk1 = TRUNK_OVERRIDES["test_siglip_tiny"]
    model_case(root, "siglip_openclip_hub", "ViT-B-16-SigLIP", siglip_cfg(v1), trunk1, 71, 32, pad_id=1)
    _, ids = tokenizer_ids(d1, texts, pad_id=1)
    write_ids(os.path.join(root, "tokenizer", "siglip_ids.json"), texts, ids)

    d2 = os.path.join(root, "models", "siglip2_openclip_hub")
    os.makedirs(d2, exist_ok=True)
    v2 = write_gemma_tokenizer(d2, lines)
    trunk2 = TRUNK_OVERRIDES["test_siglip2_tiny"]
    model_case(root, "siglip2_openclip_hub", "ViT-SO400M-16-SigLIP2-256", siglip2_cfg(v2), trunk2, 81, 24,
               pad_id=0)
    _, ids = tokenizer_ids(d2, texts, pad_id=0)
    write_ids(os.path.join(root, "tokenizer", "siglip2_ids.json"), texts, ids)

    loss_cases(os.path.join(root, "train"))


if __name__ == "__main__":
    if sys.argv[1:] == ["--zoo-table"]:
        zoo_table()
    else:
        main(sys.argv[1])
