#!/usr/bin/env bash
# Makes coordinator/assets/NotoSansSC-kvbench.otf, the font the report's charts embed: the
# Noto Sans CJK SC face (SIL Open Font License 1.1) of Debian's fonts-noto-cjk, cut down to
# Latin, Latin-1, general and CJK punctuation, arrows, maths, box shapes, full-width forms,
# and the GB2312 and Big5 level-1 characters (about 10,600, 2.2 MB). Needs apt-get and
# Python's fonttools (pip install fonttools).
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && apt-get download fonts-noto-cjk=1:20220127+repack1-1 >/dev/null)
dpkg-deb -x "$work"/fonts-noto-cjk_*.deb "$work/deb"
python3 - "$work/chars.txt" <<'PY'
import sys
chars = set()
for b1 in range(0xA1, 0xF8):
    for b2 in range(0xA1, 0xFF):
        try:
            chars.add(bytes([b1, b2]).decode("gb2312"))
        except UnicodeDecodeError:
            pass
for b1 in range(0xA4, 0xC7):
    for b2 in list(range(0x40, 0x7F)) + list(range(0xA1, 0xFF)):
        try:
            chars.add(bytes([b1, b2]).decode("big5"))
        except UnicodeDecodeError:
            pass
for lo, hi in [(0x20, 0x7F), (0xA0, 0x180), (0x2000, 0x2070), (0x2190, 0x2300),
               (0x2460, 0x24FF), (0x25A0, 0x2600), (0x3000, 0x3100), (0xFF00, 0xFFF0)]:
    chars.update(chr(c) for c in range(lo, hi))
open(sys.argv[1], "w").write("".join(sorted(c for c in chars if len(c) == 1)))
PY
pyftsubset "$work/deb/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc" --font-number=2 \
  --text-file="$work/chars.txt" --output-file=coordinator/assets/NotoSansSC-kvbench.otf \
  --layout-features='' --no-hinting --name-IDs='*'
ls -l coordinator/assets/NotoSansSC-kvbench.otf
