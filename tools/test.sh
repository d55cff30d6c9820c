#!/bin/sh
# Installs what the build and the tests need (Debian 12), builds ttfleet,
# and runs the whole test suite under ctest; then builds again with
# AddressSanitizer + UndefinedBehaviorSanitizer and runs the suite again,
# and finally runs each libFuzzer target for a bounded time.
#
#   tools/test.sh             # both builds
#   TTFLEET_NO_SANITIZE=1 tools/test.sh   # skip the sanitizer build
#   TTFLEET_NO_FUZZ=1 tools/test.sh       # skip the bounded fuzzing
#   TTFLEET_FUZZ_SECONDS=600 tools/test.sh
set -eu
cd "$(dirname "$0")/.."
./tools/deps.sh
JOBS=$(nproc 2>/dev/null || echo 2)

run_suite() {
    dir=$1; shift
    cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" >/dev/null
    cmake --build "$dir" -j "$JOBS"
    # shellcheck disable=SC2086
    (cd "$dir" && ctest --output-on-failure --timeout 900 -j 2 ${CTEST_EXTRA:-})
}

echo "== build and test: $(pwd)/build"
run_suite build
if [ -z "${TTFLEET_NO_SANITIZE:-}" ]; then
    echo "== build and test with ASan+UBSan: $(pwd)/build-asan"
    # the long soak runs in the plain build only
    ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    CTEST_EXTRA="-LE slow" run_suite build-asan -DTTFLEET_SANITIZE=ON
fi
if [ -z "${TTFLEET_NO_FUZZ:-}" ]; then
    echo "== fuzz targets, ${TTFLEET_FUZZ_SECONDS:-30}s each"
    tests/fuzz/run.sh "${TTFLEET_FUZZ_SECONDS:-30}"
fi
