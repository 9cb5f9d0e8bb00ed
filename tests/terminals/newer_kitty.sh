#!/bin/bash
# A kitty new enough to draw Kitty graphics with Unicode placeholders (>= 0.28), on a host
# whose own Debian (12, bookworm) has kitty 0.26.5 only, WITHOUT touching the host's
# packages: Debian 13 (trixie) in a chroot, its kitty drawing on the host's X display,
# the program kitty runs going back to the host (a nested chroot into a bind mount of /),
# so the app runs with the host's Python and virtualenv.
#
#   sudo tests/terminals/newer_kitty.sh install       # debootstrap trixie, kitty, Mesa (~700 MB)
#   tests/terminals/newer_kitty.sh --version          # kitty 0.41.1 created by Kovid Goyal
#   tests/terminals/newer_kitty.sh [kitty options] [--] PROGRAM [ARGS]   # in kitty's place
#
# tests/test_terminals.py runs it (as root) when /opt/trixie holds a kitty, or whatever
# LLM_PESSOAL_KITTY names:
#
#   LLM_PESSOAL_KITTY=$PWD/tests/terminals/newer_kitty.sh \
#     PYTHONPATH=$PWD .venv/bin/python -m pytest -m terminals tests/test_terminals.py -k newer
#
# PROGRAM runs on the host (same files, same ptys) in the current directory, with the
# environment kitty gives it (TERM=xterm-kitty, KITTY_WINDOW_ID, ...); DISPLAY and the rest
# pass through. The bind mounts (/ , /dev, /proc, /tmp for the X socket) live in a private
# mount namespace that ends with kitty: nothing stays mounted under the chroot afterwards,
# so removing it (rm -rf /opt/trixie) never reaches the host. Needs root (unshare, chroot).
# KITTY_ROOT: another place than /opt/trixie; MIRROR: another Debian mirror.
set -euo pipefail

ROOT=${KITTY_ROOT:-/opt/trixie}
MIRROR=${MIRROR:-http://deb.debian.org/debian}

do_install() {
    command -v debootstrap >/dev/null || apt-get install -y debootstrap
    [ -x "$ROOT/usr/bin/apt-get" ] || debootstrap --variant=minbase trixie "$ROOT" "$MIRROR"
    chroot "$ROOT" apt-get update -q
    chroot "$ROOT" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
        --no-install-recommends kitty fonts-dejavu-core libgl1 libgl1-mesa-dri libglx-mesa0 libegl1
    mkdir -p "$ROOT/host"
}

# Inside the private mount namespace: mount, then become kitty.
inside() {
    mount --bind / "$ROOT/host" # the host as it is, for the program kitty runs
    mount --rbind /dev "$ROOT/host/dev"
    mount -t proc proc "$ROOT/host/proc"
    mount --rbind /dev "$ROOT/dev" # the chroot's own view: ptys, /proc, the X socket
    mount -t proc proc "$ROOT/proc"
    mount --bind /tmp "$ROOT/tmp"
    exec chroot "$ROOT" /usr/bin/kitty "$@"
}

# The kitty options that take a value (the rest are flags or --name=value).
takes_value() {
    case "$1" in
    -o | --override | -c | --config | --class | --name | -T | --title | -d | --directory | \
        --working-directory | --session | --listen-on | --start-as | --instance-group | \
        --watcher | --os-window-tag | --position) return 0 ;;
    esac
    return 1
}

as_kitty() {
    if [ ! -x "$ROOT/usr/bin/kitty" ] || [ ! -d "$ROOT/host" ]; then
        echo "no kitty in $ROOT: run 'sudo $0 install'" >&2
        exit 3
    fi
    local args=()
    while [ $# -gt 0 ]; do
        case "$1" in
        --) shift; break ;;
        -*) if takes_value "$1"; then args+=("$1" "$2"); shift 2; else args+=("$1"); shift; fi ;;
        *) break ;;
        esac
    done
    if [ $# -gt 0 ]; then # the program: back to the host, into the directory we are in
        args+=(chroot /host /bin/sh -c 'cd "$1" && shift && exec "$@"' sh "$PWD" "$@")
    fi
    exec unshare --mount --propagation private "$0" __inside "${args[@]}"
}

case "${1:-}" in
install) do_install ;;
__inside) shift; inside "$@" ;;
*) as_kitty "$@" ;;
esac
