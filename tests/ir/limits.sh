#!/bin/sh
# The super-network's size limits as a user raises them:
# --max-params and ILNAS_MAX_PARAMS refuse a larger model with a located
# error, a high enough limit lets it through, a bad value is a usage error.
# usage: limits.sh ILNASC MODEL
set -u
ilnasc=$1 model=$2 fail=0
out=$("$ilnasc" --check --max-params 1000 "$model" 2>&1); rc=$?
case "$rc:$out" in 1:*"over the limit of 1000"*"--max-params"*) ;; *) echo "FAIL: --max-params 1000: rc $rc: $out"; fail=1 ;; esac
out=$(ILNAS_MAX_PARAMS=1000 "$ilnasc" --check "$model" 2>&1); rc=$?
case "$rc:$out" in 1:*"over the limit of 1000"*) ;; *) echo "FAIL: ILNAS_MAX_PARAMS=1000: rc $rc: $out"; fail=1 ;; esac
out=$(ILNAS_MAX_PARAMS=1000 "$ilnasc" --check --max-params 100000000 "$model" 2>&1); rc=$?
[ $rc = 0 ] || { echo "FAIL: the flag does not win over the environment: rc $rc: $out"; fail=1; }
out=$("$ilnasc" --check --max-arena 1000 "$model" 2>&1); rc=$?
case "$rc:$out" in 1:*arena*) ;; *) echo "FAIL: --max-arena 1000: rc $rc: $out"; fail=1 ;; esac
out=$("$ilnasc" --check --max-params abc "$model" 2>&1); rc=$?
[ $rc = 2 ] || { echo "FAIL: --max-params abc: rc $rc: $out"; fail=1; }
[ $fail = 0 ] && echo "ok: limits"
exit $fail
