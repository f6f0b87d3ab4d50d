# Sourced by scripts/test.sh and scripts/fuzz.sh: `phase NAME CMD...` runs CMD and prints its wall time and the
# CPU time (user + sys) of the processes it waited for, e.g. "time: build 612 s wall, 1190 s CPU". CPU time is the
# figure to compare on a shared machine: it does not grow while other work has the cores.
_phase_cpu() {  # children's user + sys seconds so far (`times` must run in this shell, not in $(...))
  local f
  f="$(mktemp)"
  times >"$f"
  _phase_cpu_s="$(tail -n 1 "$f" | awk '{ s = 0; for (i = 1; i <= 2; i++) { split($i, a, "m"); s += a[1] * 60 + a[2] } printf "%d", s }')"
  rm -f "$f"
}
phase() {
  local name="$1" t0="$SECONDS" c0 rc=0
  shift
  _phase_cpu
  c0="$_phase_cpu_s"
  "$@" || rc=$?
  _phase_cpu
  echo "time: $name $((SECONDS - t0)) s wall, $((_phase_cpu_s - c0)) s CPU"
  return "$rc"
}
