#!/usr/bin/env bash
# Builds llama.cpp's `llama-server` from the llama-cpp-python sdist on PyPI (llama.cpp is
# vendored in it) and a tiny random-weight GGUF model, for kvbench's real-engine tests and
# for trying kvbench against a real engine on a laptop. Needs only Python 3, a C/C++
# compiler and the Python package registry. Everything lands in one cache folder, reused by
# later runs on the same machine:
#
#   ${KVBENCH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kvbench}/llama.cpp-<version>/
#     bin/llama-server     the server (static, ~15 MB)
#     model.gguf           a llama-architecture model with random weights (~24 MB)
#
# Prints the folder on its last line. ~8-10 minutes on 2 cores the first time; instant after.
set -euo pipefail

VERSION=0.3.36 # llama-cpp-python, vendoring llama.cpp at commit 0c1e570
CACHE="${KVBENCH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kvbench}"
DIR="$CACHE/llama.cpp-$VERSION"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
mkdir -p "$DIR"

log() { echo "build-llama-server: $*" >&2; }

if [ -x "$DIR/bin/llama-server" ] && [ -s "$DIR/model.gguf" ]; then
  echo "$DIR"
  exit 0
fi

# A C++ compiler: on a Debian machine without one, install g++ (as root only).
if ! command -v c++ >/dev/null 2>&1 && ! command -v g++ >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    log "installing g++"
    apt-get update -qq && apt-get install -y -qq g++ >/dev/null
  else
    log "no C++ compiler (g++ or clang++) found: install one"
    exit 1
  fi
fi

# Build tools and the gguf writer, in a venv of their own (nothing installed system-wide).
if [ ! -x "$DIR/venv/bin/ninja" ] || [ ! -x "$DIR/venv/bin/cmake" ] || ! "$DIR/venv/bin/python" -c 'import gguf, numpy' 2>/dev/null; then
  log "installing cmake, ninja, gguf and numpy into $DIR/venv"
  python3 -m venv "$DIR/venv"
  "$DIR/venv/bin/pip" install --quiet --disable-pip-version-check cmake ninja 'gguf==0.17.1' numpy
fi

if [ ! -x "$DIR/bin/llama-server" ]; then
  SRC="$DIR/src"
  if [ ! -d "$SRC/vendor/llama.cpp" ]; then
    log "downloading the llama-cpp-python $VERSION sdist"
    rm -rf "$DIR/download" "$SRC"
    mkdir -p "$DIR/download"
    "$DIR/venv/bin/pip" download --quiet --disable-pip-version-check --no-deps \
      --no-binary llama-cpp-python "llama-cpp-python==$VERSION" -d "$DIR/download"
    mkdir -p "$SRC"
    tar -xzf "$DIR"/download/llama_cpp_python-"$VERSION".tar.gz -C "$SRC" --strip-components=1
    rm -rf "$DIR/download"
  fi
  log "building llama-server (about 8 minutes on 2 cores)"
  PATH="$DIR/venv/bin:$PATH" cmake -S "$SRC/vendor/llama.cpp" -B "$DIR/build" -G Ninja \
    -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF -DBUILD_SHARED_LIBS=OFF \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF >"$DIR/cmake.log" 2>&1 \
    || { tail -30 "$DIR/cmake.log" >&2; exit 1; }
  PATH="$DIR/venv/bin:$PATH" ninja -C "$DIR/build" llama-server >"$DIR/ninja.log" 2>&1 \
    || { tail -30 "$DIR/ninja.log" >&2; exit 1; }
  mkdir -p "$DIR/bin"
  cp "$DIR/build/bin/llama-server" "$DIR/bin/llama-server.tmp"
  mv "$DIR/bin/llama-server.tmp" "$DIR/bin/llama-server"
  rm -rf "$DIR/build" "$SRC" "$DIR/cmake.log" "$DIR/ninja.log"
fi

if [ ! -s "$DIR/model.gguf" ]; then
  log "writing the tiny random-weight model"
  "$DIR/venv/bin/python" "$HERE/make_tiny_gguf.py" "$DIR/model.gguf.tmp"
  mv "$DIR/model.gguf.tmp" "$DIR/model.gguf"
fi

echo "$DIR"
