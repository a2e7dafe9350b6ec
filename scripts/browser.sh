#!/usr/bin/env bash
# Debian's Chromium and a CJK font for the console's browser tests (tests/e2e/browser).
#   scripts/browser.sh install   install them if missing (apt-get; root or sudo)
#   scripts/browser.sh check     say whether they are there
# Playwright drives /usr/bin/chromium; nothing is downloaded at test time.
set -euo pipefail
PACKAGES=(chromium fonts-wqy-microhei)

missing() {
  local out=()
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || out+=("$p")
  done
  echo "${out[@]:-}"
}

case "${1:-check}" in
  install)
    todo=$(missing)
    if [ -z "$todo" ]; then echo "browser: $(chromium --version 2>/dev/null || echo chromium) present"; exit 0; fi
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    export DEBIAN_FRONTEND=noninteractive
    # shellcheck disable=SC2086
    $SUDO apt-get install -y --no-install-recommends $todo >/dev/null 2>&1 || {
      $SUDO apt-get update >/dev/null
      $SUDO apt-get install -y --no-install-recommends $todo >/dev/null
    }
    chromium --version
    ;;
  check)
    todo=$(missing)
    if [ -n "$todo" ]; then echo "missing: $todo (scripts/browser.sh install)"; exit 1; fi
    chromium --version
    ;;
  *) echo "usage: $0 install|check" >&2; exit 2 ;;
esac
