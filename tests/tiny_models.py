"""Tiny, seeded Transformers built from scratch for tests: saved with ``save_pretrained`` and
loaded back through :func:`audit.load_model`, so tests exercise the real loading code.

Each builder trains a tokenizer with ``tokenizers`` on a small generated corpus, builds a model
from a small config (hidden 32, 2 layers) and writes both to a folder.
"""

from __future__ import annotations

import itertools
import random
from pathlib import Path

import torch

_SUBJECTS = ["the man", "the woman", "he", "she", "the doctor", "the nurse", "my friend", "the engineer",
             "the teacher", "the poor family", "the rich family", "the old man", "the young woman",
             "the immigrant", "the american", "the christian", "the muslim", "the jewish boy", "the black man",
             "the white man", "the asian girl", "the african man", "a mexican worker", "the gay man"]
_VERBS = ["is", "was", "seems", "became", "looked"]
_ADJS = ["good", "bad", "lazy", "smart", "kind", "angry", "rich", "poor", "strong", "weak", "happy", "sad",
         "honest", "violent", "caring", "emotional", "rational", "clean", "dirty", "friendly"]
_TAILS = ["at work", "at home", "today", "in the city", "with the children", "after school", "."]

TR_SENTENCES = [
    "o bir doktor", "o bir hemşire", "o bir mühendis", "o bir öğretmen", "o evde çalışıyor",
    "kadın mutfakta yemek yaptı", "adam arabayı tamir etti", "o çok güçlü", "o çok duygusal",
    "annesi öğretmen", "babası mühendis", "kız kardeşi doktor", "erkek kardeşi hemşire",
    "ayşe okula gitti", "mehmet işe gitti", "o bugün çok mutlu", "o dün çok üzgündü",
]


def corpus(n: int = 400, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    combos = list(itertools.product(_SUBJECTS, _VERBS, _ADJS, _TAILS))
    rng.shuffle(combos)
    out = [f"{s} {v} {a} {t}".replace(" .", ".") for s, v, a, t in combos[:n]]
    return out + [s.capitalize() for s in out[: n // 4]] + TR_SENTENCES * 3


def _seed(seed: int) -> None:
    torch.manual_seed(seed)
    random.seed(seed)


def _wordpiece_tokenizer(folder: Path, texts: list[str], lowercase: bool = True):  # type: ignore[no-untyped-def]
    from tokenizers import (
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
    )
    from transformers import BertTokenizerFast

    normalizer = normalizers.BertNormalizer(lowercase=lowercase)
    pre = pre_tokenizers.BertPreTokenizer()
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    # The WordPiece trainer breaks ties between equally frequent merges in hash order, so two builds
    # of the same corpus gave different vocabularies (and then different weights). The vocabulary is
    # built here instead, deterministically: the special tokens, every character alone and as a
    # continuation (##c), then whole words by frequency (ties alphabetical) up to 400 entries.
    counts: dict[str, int] = {}
    for text in texts:
        for word, _ in pre.pre_tokenize_str(normalizer.normalize_str(text)):
            counts[word] = counts.get(word, 0) + 1
    chars = sorted({c for w in counts for c in w})
    vocab_list = special + chars + [f"##{c}" for c in chars]
    vocab_list += [w for w, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if len(w) > 1]
    vocab = {w: i for i, w in enumerate(list(dict.fromkeys(vocab_list))[:400])}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)]
    )
    tok.decoder = decoders.WordPiece()
    fast = BertTokenizerFast(tokenizer_object=tok, do_lower_case=lowercase, unk_token="[UNK]", pad_token="[PAD]",
                             cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]", model_max_length=128)
    fast.save_pretrained(folder)
    return fast


def _bytelevel_tokenizer(folder: Path, texts: list[str], style: str):  # type: ignore[no-untyped-def]
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    if style == "roberta":
        special = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    elif style == "gpt2":
        special = ["<|endoftext|>"]
    else:  # llama-like
        special = ["<unk>", "<s>", "</s>"]
    tok.train_from_iterator(
        texts,
        trainers.BpeTrainer(vocab_size=400, special_tokens=special, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()),
    )
    if style == "roberta":
        tok.post_processor = processors.RobertaProcessing(("</s>", tok.token_to_id("</s>")), ("<s>", tok.token_to_id("<s>")))
        fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                       pad_token="<pad>", mask_token="<mask>", cls_token="<s>", sep_token="</s>",
                                       model_max_length=128)
    elif style == "gpt2":
        fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", unk_token="<|endoftext|>",
                                       model_max_length=128)
    else:
        fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                       model_max_length=128)
    fast.save_pretrained(folder)
    return fast


def build_bert(
    folder: Path, kind: str = "masked-lm", seed: int = 0, num_labels: int = 2, initializer_range: float = 0.02
) -> Path:
    """A tiny BERT; a larger ``initializer_range`` gives sharper (less uniform) predictions."""
    from transformers import BertConfig, BertForMaskedLM, BertForSequenceClassification, BertModel

    _seed(seed)
    tok = _wordpiece_tokenizer(folder, corpus())
    cfg = BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=128, pad_token_id=tok.pad_token_id,
                     num_labels=num_labels, initializer_range=initializer_range)
    cls = {"masked-lm": BertForMaskedLM, "encoder": BertModel, "classifier": BertForSequenceClassification}[kind]
    model = cls(cfg).eval()
    model.save_pretrained(folder)
    return folder


def build_roberta(folder: Path, seed: int = 0) -> Path:
    from transformers import RobertaConfig, RobertaForMaskedLM

    _seed(seed)
    tok = _bytelevel_tokenizer(folder, corpus(), "roberta")
    cfg = RobertaConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=130, pad_token_id=tok.pad_token_id,
                        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    RobertaForMaskedLM(cfg).eval().save_pretrained(folder)
    return folder


def build_gpt2(folder: Path, seed: int = 0) -> Path:
    from transformers import GPT2Config, GPT2LMHeadModel

    _seed(seed)
    tok = _bytelevel_tokenizer(folder, corpus(), "gpt2")
    cfg = GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=2, n_head=4, n_positions=128,
                     bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id)
    GPT2LMHeadModel(cfg).eval().save_pretrained(folder)
    return folder


def build_llama(folder: Path, seed: int = 0) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    _seed(seed)
    tok = _bytelevel_tokenizer(folder, corpus(), "llama")
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, intermediate_size=64, max_position_embeddings=128,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, tie_word_embeddings=False)
    LlamaForCausalLM(cfg).eval().save_pretrained(folder)
    return folder


def make_pickled_copy(src: Path, dst: Path) -> Path:
    """A copy of a saved model whose weights are a pickled ``pytorch_model.bin`` only."""
    import shutil

    from safetensors.torch import load_file

    shutil.copytree(src, dst)
    for f in dst.glob("*.safetensors"):
        torch.save(load_file(f), dst / "pytorch_model.bin")
        f.unlink()
    return dst


# --------------------------------------------------------------------------------------------
# Turkish tokenizer models (templates / counterfactual probes)
# --------------------------------------------------------------------------------------------

_TR_SUBJECTS = ["o", "O", "kadın", "erkek", "anne", "baba", "Ayşe", "Mehmet", "Fatma", "Mustafa", "kız", "oğlan",
                "hanımefendi", "beyefendi", "Türk", "Suriyeli", "Müslüman", "Hristiyan", "ateist", "komşum"]
_TR_NOUNS = ["mühendis", "hemşire", "doktor", "öğretmen", "tamirci", "sekreter", "pilot", "kuaför", "mimar",
             "dadı", "cerrah", "kasiyer", "elektrikçi", "ebe", "yazılımcı", "temizlikçi", "kadın", "erkek"]
_TR_ADJS = ["güçlü", "duygusal", "çalışkan", "tembel", "dürüst", "kaba", "nazik", "cesur", "zeki", "utangaç",
            "hassas", "mantıklı", "temiz", "pis", "şefkatli", "saldırgan"]
_TR_FRAMES = ["{s} bir {n}.", "{s} çok {a} bir {n}.", "{s} {n} olarak çalışıyor.", "{s} insanlar {a}.",
              "{s} evde {a} biriydi.", "Herkes onun {a} bir {n} olduğunu söylüyor.",
              "{s}'nin arabası bugün serviste.", "{s} kardeşim okula gitti."]


def turkish_corpus(n: int = 500, seed: int = 0) -> list[str]:
    """Generated Turkish sentences (with ç, ğ, ı, İ, ö, ş, ü) for a Turkish tokenizer."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        f = rng.choice(_TR_FRAMES)
        out.append(f.format(s=rng.choice(_TR_SUBJECTS), n=rng.choice(_TR_NOUNS), a=rng.choice(_TR_ADJS)))
    return out + TR_SENTENCES * 3


def build_turkish_bert(folder: Path, seed: int = 0) -> Path:
    """A tiny cased BertForMaskedLM whose WordPiece vocabulary is trained on Turkish sentences
    (accents kept, like dbmdz/bert-base-turkish-cased)."""
    from transformers import BertConfig, BertForMaskedLM

    _seed(seed)
    tok = _wordpiece_tokenizer(folder, turkish_corpus(seed=seed), lowercase=False)
    cfg = BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=128, pad_token_id=tok.pad_token_id)
    BertForMaskedLM(cfg).eval().save_pretrained(folder)
    return folder


def build_turkish_llama(folder: Path, seed: int = 0) -> Path:
    """A tiny LlamaForCausalLM with a byte-level BPE tokenizer trained on Turkish sentences."""
    from transformers import LlamaConfig, LlamaForCausalLM

    _seed(seed)
    tok = _bytelevel_tokenizer(folder, turkish_corpus(seed=seed), "llama")
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, intermediate_size=64, max_position_embeddings=128,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, tie_word_embeddings=False)
    LlamaForCausalLM(cfg).eval().save_pretrained(folder)
    return folder


def train_tiny_lm(src: Path, dst: Path, texts: list[str], *, steps: int = 150, lr: float = 3e-3,
                  seed: int = 0, mlm_probability: float = 0.3, always_mask: tuple[str, ...] = ()) -> Path:
    """Copy a tiny saved LM to ``dst`` and train it on ``texts`` (next-token loss for causal LMs,
    masked-token loss for masked LMs), so a test can plant a known association and check that a
    probe finds it. ``always_mask`` (masked LMs): words whose tokens are masked in every step, so
    the model must predict them from context. Full-batch AdamW; a few seconds on CPU."""
    import shutil

    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer

    _seed(seed)
    shutil.copytree(src, dst)
    tok = AutoTokenizer.from_pretrained(dst)
    archs = AutoConfig.from_pretrained(dst).architectures or []
    masked = any(a.endswith("ForMaskedLM") for a in archs)
    model = (AutoModelForMaskedLM if masked else AutoModelForCausalLM).from_pretrained(dst)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token or tok.unk_token
    if masked:
        enc = tok(texts, padding=True, return_tensors="pt")
    else:
        prefix = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
        ids = [[prefix] + tok(t, add_special_tokens=False)["input_ids"] for t in texts]
        width = max(len(x) for x in ids)
        enc = {"input_ids": torch.tensor([x + [tok.pad_token_id] * (width - len(x)) for x in ids]),
               "attention_mask": torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in ids])}
    forced = torch.tensor([i for w in always_mask for i in tok(w, add_special_tokens=False)["input_ids"]],
                          dtype=torch.long)
    for m in model.modules():  # no dropout: the outcome must not hang on the global RNG state
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    _seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        input_ids = enc["input_ids"].clone()
        labels = enc["input_ids"].clone()
        labels[enc["attention_mask"] == 0] = -100
        if masked:
            special = torch.tensor([[t in tok.all_special_ids for t in row] for row in input_ids.tolist()])
            pick = (torch.rand(input_ids.shape, generator=gen) < mlm_probability) & ~special
            pick |= torch.isin(input_ids, forced)
            labels[~pick] = -100
            input_ids[pick] = tok.mask_token_id
        out = model(input_ids=input_ids, attention_mask=enc["attention_mask"], labels=labels)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    model.eval()
    model.save_pretrained(dst)
    return dst
