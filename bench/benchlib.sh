# benchlib.sh: the shell prologue the bench scripts share (bench/benchlib.py holds the rest).
# Source it after `self` is set and the working directory is the repository root.

# bench_args NAME ARGS...: the common options. Sets build (--build-dir, default
# build-release) and args (what is passed on to the Python part: --runs, --out, --case,
# --quick, and any option named in extra_value_opts, each taking a value).
bench_args() {
  local name="$1"
  shift
  build=build-release
  args=()
  while [ $# -gt 0 ]; do
    case "$1" in
      --build-dir) build="$2"; shift 2 ;;
      --runs|--out|--case) args+=("$1" "$2"); shift 2 ;;
      --quick) args+=("$1"); shift ;;
      -h|--help) sed -n '2,/^set /s/^# \{0,1\}//p' "$self"; exit 0 ;;
      *)
        if [[ " ${extra_value_opts:-} " == *" $1 "* ]] && [ $# -ge 2 ]; then
          args+=("$1" "$2"); shift 2
        else
          echo "$name: unknown argument $1 (see --help)" >&2; exit 2
        fi ;;
    esac
  done
}

# bench_build NAME GENERATOR...: builds the Release configuration in $build and checks that
# each load generator was built (its library may be missing).
bench_build() {
  local name="$1"
  shift
  echo "== build ($build, Release)"
  cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DWARREN_TESTS=OFF >/dev/null
  cmake --build "$build" -j"$(nproc)" >"$build/$name-build.log" 2>&1 ||
    { echo "$name: the build failed (see $build/$name-build.log)" >&2; exit 1; }
  local gen
  for gen in "$@"; do
    [ -x "$build/bench/$gen" ] ||
      { echo "$name: no $gen (apt-get install librabbitmq-dev librdkafka-dev)" >&2; exit 1; }
  done
}
