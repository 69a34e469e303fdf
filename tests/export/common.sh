# Sourced by export.sh and interop.sh.

fail() { echo "FAIL: $*"; exit 1; }

# same_acc EVAL_OUT CMP_OUT WHAT: the test accuracy `model eval` printed
# (its JSON line in EVAL_OUT) and that of the exported network WHAT (the
# line of `tx compare` in CMP_OUT) agree to 0.01 points; one line says
# which, and a difference fails the test.
same_acc() {
  eacc=$(sed -n 's/.*"test_acc": \([0-9.]*\).*/\1/p' "$1")
  gacc=$(sed -n 's/.*exported \([0-9.]*\)%.*/\1/p' "$2")
  awk -v e="$eacc" -v g="$gacc" -v w="$3" 'BEGIN { d = e * 100 - g; if (d < 0) d = -d;
    if (d > 0.01 + 1e-9) { print "FAIL: model eval " e * 100 "% vs " w " " g "%"; exit 1 }
    print "ok: model eval " e * 100 "% = " w " " g "%" }'
}
