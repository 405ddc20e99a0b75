#!/bin/sh
# Debian/Ubuntu packages that napari needs to render headless (focalmix view --png,
# focalmix_lib.viz.napari_view.render_png, notebook 06, tests/test_napari_view.py):
#   - Xvfb (and xauth for xvfb-run): an X server without a screen;
#   - Mesa's DRI drivers: software OpenGL (llvmpipe) for that server;
#   - the shared libraries that Qt 6's xcb platform plugin and napari's GL canvas
#     load (the PyQt6 wheels bundle Qt itself, not these).
# And python3-venv, without which Debian's python3 cannot make ./kit's virtual environment.
# Run as root (or with sudo available). Reruns with everything present do nothing.
set -eu

PACKAGES="
python3-venv
xvfb
xauth
libgl1-mesa-dri
libgl1
libegl1
libglib2.0-0
libfontconfig1
libdbus-1-3
libx11-xcb1
libxkbcommon-x11-0
libxcb-cursor0
libxcb-icccm4
libxcb-image0
libxcb-keysyms1
libxcb-randr0
libxcb-render-util0
libxcb-shape0
libxcb-xfixes0
libxcb-xkb1
"

missing=""
for package in $PACKAGES; do
    if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $package"
    fi
done

if [ -z "$missing" ]; then
    echo "napari system packages: all present"
    exit 0
fi

as_root=""
if [ "$(id -u)" -ne 0 ]; then
    as_root="sudo"
fi

echo "napari system packages: installing$missing"
$as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
# shellcheck disable=SC2086 # the package list is meant to split into words
$as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
