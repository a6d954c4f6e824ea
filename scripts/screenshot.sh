#!/usr/bin/env bash
# Starts the real viewer binary under Xvfb on the bundled sample and takes a screenshot of the
# whole screen. Needs xvfb, xauth, imagemagick and Mesa's Vulkan driver (.ci/run installs them).
#   scripts/screenshot.sh [OUT.png] [BINARY] [IMAGE] [MASK]
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-docs/screenshot.png}
bin=${2:-target/release/medsam-viewer}
image=${3:-assets/sample/chest_ct_lesion.nii.gz}
mask=${4:-assets/sample/chest_ct_lesion_gt.nii.gz}
mkdir -p "$(dirname "$out")"
display=:$((90 + RANDOM % 9))
tmp=$(mktemp -d)
Xvfb "$display" -screen 0 1280x800x24 -nolisten tcp >"$tmp/xvfb.log" 2>&1 &
xvfb=$!
trap 'kill $viewer $xvfb 2>/dev/null || true; rm -rf "$tmp"' EXIT
sleep 1
# Isolated settings/recovery folders so the shot does not depend on this user's history.
DISPLAY=$display XDG_CONFIG_HOME=$tmp XDG_STATE_HOME=$tmp XDG_CACHE_HOME=$tmp "$bin" "$image" --mask "$mask" >"$tmp/viewer.log" 2>&1 &
viewer=$!
for _ in $(seq 1 50); do
  sleep 0.2
  if ! kill -0 "$viewer" 2>/dev/null; then
    echo "the viewer exited:" >&2
    cat "$tmp/viewer.log" >&2
    exit 1
  fi
done
DISPLAY=$display import -window root "$out"
echo "wrote $out"
