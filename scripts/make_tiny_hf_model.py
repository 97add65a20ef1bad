#!/usr/bin/env python3
"""Writes a tiny Hugging Face model folder with random weights, for kvbench's vLLM tests
(vLLM's CPU build serves it; no model hub needed).

Shape: LlamaForCausalLM, hidden size 256, 4 layers, 4 heads of 64, bf16 (~20 M
parameters). Tokenizer: byte-level BPE trained here on plain English (every text can be
tokenized; common words are one token), with a chat template that renders a chat exactly
as kvbench-sim does, so that /v1/chat/completions and /tokenize work and the sim, given
this tokenizer.json, counts and caches the same tokens. The end-of-sequence token is unreachable
(its output row is pushed far down), so that every generation runs to max_tokens.

Usage: make_tiny_hf_model.py OUT_DIR   (needs torch, transformers and tokenizers)
"""

import os
import random
import sys

HIDDEN, LAYERS, HEADS, FF, CTX, VOCAB = 256, 4, 4, 512, 8192, 4096

WORDS = """the of and to a in is it you that he was for on are with as his they be at one
have this from or had by not word but what some we can out other were all there when up use
your how said an each she which do their time if will way about many then them write would
like so these her long make thing see him two has look more day could go come did number
sound no most people my over know water than call first who may down side been now find any
new work part take get place made live where after back little only round man year came show
every good me give our under name very through just form sentence great think say help low
line differ turn cause much mean before move right boy old too same tell does set three want
air well also play small end put home read hand port large spell add even land here must big
high such follow act why ask men change went light kind off need house picture try us again
animal point mother world near build self earth father head stand own page should country
found answer school grow study still learn plant cover food sun four between state keep eye
never last let thought city tree cross farm hard start might story saw far sea draw left late
run while press close night real life few north open seem together next white children begin
got walk example ease paper group always music those both mark often letter until mile river
car feet care second book carry took science eat room friend began idea fish mountain stop
once base hear horse cut sure watch color face wood main enough plain girl usual young ready
above ever red list though feel talk bird soon body dog family direct pose leave song measure
door product black short numeral class wind question happen complete ship area half rock
order fire south problem piece told knew pass since top whole king space heard best hour
better true during hundred five remember step early hold west ground interest reach fast verb
sing listen six table travel less morning ten simple several vowel toward war lay against
pattern slow center love person money serve appear road map rain rule govern pull cold notice
voice unit power town fine certain fly fall lead cry dark machine note wait plan figure star
box noun field rest correct able pound done beauty drive stood contain front teach week final
gave green oh quick develop ocean warm free minute strong special mind behind clear tail
produce fact street inch multiply nothing course stay wheel full force blue object decide
surface deep moon island foot system busy test record boat common gold possible plane stead
dry wonder laugh thousand ago ran check game shape equate hot miss brought heat snow tire
bring yes distant fill east paint language among cache memory engine server request token
model latency throughput document question answer summary context section report""".split()

SPECIAL = ["<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]
# kvbench-sim's rendering of a chat (kvbench_common::tokenizer::render_chat), so that the
# sim given this tokenizer (--tokenizer) caches exactly the tokens vLLM caches.
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|> {{ m['role'] }} {{ m['content'] }} <|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|> assistant{% endif %}"
)


def corpus():
    """Plain English-like text: the words, capitalised and not, with punctuation and
    digits, in random order (seeded)."""
    rng = random.Random(20261206)
    lines = []
    for _ in range(4000):
        n = rng.randint(5, 30)
        words = [rng.choice(WORDS) for _ in range(n)]
        if rng.random() < 0.3:
            words[0] = words[0].capitalize()
        line = " ".join(words) + rng.choice([".", ",", "?", "!", ":", ";"])
        if rng.random() < 0.2:
            line += f" {rng.randint(0, 99999)}"
        lines.append(line)
    lines.append("".join(chr(c) for c in range(32, 127)))
    return lines


def tokenizer(out):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB,
        special_tokens=SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus(), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        model_max_length=CTX,
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(out)
    return fast


def main(out):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    os.makedirs(out, exist_ok=True)
    tok = tokenizer(out)
    n_vocab = len(tok)
    torch.manual_seed(20261206)
    config = LlamaConfig(
        vocab_size=n_vocab,
        hidden_size=HIDDEN,
        intermediate_size=FF,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        num_key_value_heads=HEADS,
        head_dim=HIDDEN // HEADS,
        max_position_embeddings=CTX,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        tie_word_embeddings=False,
        torch_dtype="bfloat16",
    )
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        # No reply ends early: the special tokens' output rows score far below the rest.
        for i in range(len(SPECIAL)):
            model.lm_head.weight[i].fill_(0.0)
        model.lm_head.bias = None
        final = model.model.norm.weight
        final.fill_(1.0)
        emb = model.model.embed_tokens.weight
        emb[:, 0] = 1.0
        model.lm_head.weight[:, 0] = 1.0
        for i in range(len(SPECIAL)):
            model.lm_head.weight[i, 0] = -1.0
    model = model.to(torch.bfloat16)
    model.save_pretrained(out, safe_serialization=True)
    print(f"{out}: {n_vocab} tokens, {sum(p.numel() for p in model.parameters())} parameters",
          file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1])
