#!/usr/bin/env bash
# Makes the Python virtual environment the interop tests read VHDX files
# with (read_vhdx.py beside this script): libvhdi-python (libvhdi's own
# Python bindings, as wheels) and dissect.hypervisor, at the versions the
# tests were written against.
#
#   $VENV/bin/python     the interpreter; tests take it from $REFPOINT_PYTHON
#                        (.ci/run sets it) or find it at the default place
#
# VENV is $REFPOINT_VENV or /var/cache/refpoint-venv. Idempotent: a venv
# that already has these pins is kept. Needs PyPI, python3, and root for
# apt-get when python3 or its venv module is missing.
set -euo pipefail

VENV=${REFPOINT_VENV:-/var/cache/refpoint-venv}
PINS=(
  libvhdi-python==20260901
  dissect.hypervisor==3.21
  dissect.cstruct==4.7
  dissect.util==3.24
  defusedxml==0.7.1
)
STAMP=$VENV/refpoint-pins

log() { echo "prepare.sh: $*" >&2; }
SUDO=""
if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null; then SUDO=sudo; fi

if [ "$(cat "$STAMP" 2>/dev/null)" = "${PINS[*]}" ] \
  && "$VENV/bin/python" -c 'import pyvhdi, dissect.hypervisor.disk.vhdx' 2>/dev/null; then
  exit 0
fi

apt_install() {
  log "installing $*"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@"
}
command -v python3 >/dev/null || apt_install python3
# Debian's python3 lacks ensurepip until python3-venv is installed.
if ! python3 -m venv --clear "$VENV" 2>/dev/null; then
  apt_install python3-venv
  python3 -m venv --clear "$VENV"
fi
log "installing ${PINS[*]} into $VENV"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check "${PINS[@]}"
"$VENV/bin/python" -c 'import pyvhdi, dissect.hypervisor.disk.vhdx'
echo "${PINS[*]}" > "$STAMP"
