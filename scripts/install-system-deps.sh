#!/usr/bin/env bash
# Debian packages the project uses: opencv-doc ships ~20 real training photos (and the sample videos);
# chromium is the headless browser of the app's browser test. Then scripts/fetch-data.sh unpacks the other real data
# (video clips, MNIST digits, Fashion-MNIST, text corpora) under data/, which needs no root.
# Without root or apt-get this prints what to install and exits 0: the tests that need it skip with a reason.
set -u
here="$(cd "$(dirname "$0")" && pwd)"

install_packages() {
  local packages=(opencv-doc chromium) missing=() p
  for p in "${packages[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "note: please install the Debian packages: ${missing[*]} (sudo apt-get install ${missing[*]})" >&2
    return 0
  fi
  echo "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
    || echo "note: apt-get could not install ${missing[*]}; continuing without" >&2
}

install_packages
bash "$here/fetch-data.sh"
exit 0
