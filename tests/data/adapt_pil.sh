#!/bin/sh
# The resize adapter against PIL's bilinear resize, enlarging and
# shrinking. Skips (77) without python3-pil on /usr/bin/python3.
set -eu
test_bin=$1 dir=$2
rm -rf "$dir" && mkdir -p "$dir"
/usr/bin/python3 "$(dirname "$0")/adapt_pil.py" "$dir" || exit $?
"$test_bin" --pil "$dir"
