#!/bin/sh
# Decodes images written by PIL and compares with PIL's own decodes: the
# folder loader sees what torchvision's ImageFolder sees, within 1 level.
# Skips (77) without python3-pil on /usr/bin/python3.
set -eu
test_bin=$1 dir=$2
rm -rf "$dir" && mkdir -p "$dir"
/usr/bin/python3 "$(dirname "$0")/folder_pil.py" "$dir" || exit $?
"$test_bin" --pil "$dir"
