#!/usr/bin/env python3
"""Writes a tiny llama-architecture GGUF model with random weights, for kvbench's
real-engine tests (llama.cpp's llama-server serves it; no model hub needed).

Shape: hidden size 256, 6 layers, 4 heads, f32, context 8192 (~24 MB). Vocabulary: a
SentencePiece-style list of ~2,000 pieces: byte fallbacks, printable characters, and whole
common English words (with every prefix, so that SPM merging reaches the word), so that a
common word is one token and any text can be tokenized. The end-of-sequence token is
unreachable: dimension 0 of every embedding is a large constant, and the output weights
read it as +1 for normal pieces and -1 for control tokens, so every generation runs to
max_tokens. A chat template makes /v1/chat/completions work.

Usage: make_tiny_gguf.py OUT.gguf   (needs the `gguf` and `numpy` packages)
"""

import string
import sys

import numpy as np
import gguf

HIDDEN, LAYERS, HEADS, FF, CTX = 256, 6, 4, 512, 8192

# Frequent English words; a word not here is spelt with shorter pieces.
COMMON = """the of and to a in is it you that he was for on are with as his they be at one
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
model latency throughput""".split()


def vocabulary():
    pieces = [("<unk>", 2), ("<s>", 3), ("</s>", 3)]
    pieces += [(f"<0x{b:02X}>", 6) for b in range(256)]
    seen = {p for p, _ in pieces}

    def add(p):
        if p not in seen:
            seen.add(p)
            pieces.append((p, 1))

    add("\u2581")
    for c in string.printable.strip():
        add(c)
        add("\u2581" + c)
    for w in COMMON:
        for cap in (w, w.capitalize()):
            s = "\u2581" + cap
            for i in range(2, len(s) + 1):
                add(s[:i])
    return pieces


def main(out):
    rng = np.random.default_rng(20261201)
    pieces = vocabulary()
    n_vocab = len(pieces)
    w = gguf.GGUFWriter(out, "llama")
    w.add_name("kvbench-tiny-random")
    w.add_context_length(CTX)
    w.add_embedding_length(HIDDEN)
    w.add_block_count(LAYERS)
    w.add_feed_forward_length(FF)
    w.add_head_count(HEADS)
    w.add_head_count_kv(HEADS)
    w.add_rope_dimension_count(HIDDEN // HEADS)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    w.add_tokenizer_model("llama")
    w.add_token_list([p.encode() for p, _ in pieces])
    # SPM merges by score: longer pieces first, so whole words win.
    w.add_token_scores([float(len(p)) if t == 1 else 0.0 for p, t in pieces])
    w.add_token_types([t for _, t in pieces])
    w.add_unk_token_id(0)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)
    w.add_chat_template(
        "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
    )

    def rnd(*shape, scale=0.02):
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    emb = rnd(n_vocab, HIDDEN)
    emb[:, 0] = 1.0
    out_w = rnd(n_vocab, HIDDEN)
    out_w[:, 0] = [1.0 if t == 1 else -1.0 for _, t in pieces]
    w.add_tensor("token_embd.weight", emb)
    w.add_tensor("output_norm.weight", np.ones(HIDDEN, dtype=np.float32))
    w.add_tensor("output.weight", out_w)
    for i in range(LAYERS):
        w.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(HIDDEN, dtype=np.float32))
        for t in ("attn_q", "attn_k", "attn_v", "attn_output"):
            w.add_tensor(f"blk.{i}.{t}.weight", rnd(HIDDEN, HIDDEN))
        w.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(HIDDEN, dtype=np.float32))
        w.add_tensor(f"blk.{i}.ffn_gate.weight", rnd(FF, HIDDEN))
        w.add_tensor(f"blk.{i}.ffn_up.weight", rnd(FF, HIDDEN))
        w.add_tensor(f"blk.{i}.ffn_down.weight", rnd(HIDDEN, FF))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print(f"{out}: {n_vocab} pieces", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1])
