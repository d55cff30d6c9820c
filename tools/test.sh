#!/bin/sh
# Installs what the build and the tests need (Debian 12), builds ttfleet,
# and runs the whole test suite under ctest; then builds again with
# AddressSanitizer + UndefinedBehaviorSanitizer and runs the suite again.
#
#   tools/test.sh             # both builds
#   TTFLEET_NO_SANITIZE=1 tools/test.sh   # the plain build only
set -eu
cd "$(dirname "$0")/.."
./tools/deps.sh
JOBS=$(nproc 2>/dev/null || echo 2)

run_suite() {
    dir=$1; shift
    cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" >/dev/null
    cmake --build "$dir" -j "$JOBS"
    (cd "$dir" && ctest --output-on-failure --timeout 600 -j 2)
}

echo "== build and test: $(pwd)/build"
run_suite build
if [ -z "${TTFLEET_NO_SANITIZE:-}" ]; then
    echo "== build and test with ASan+UBSan: $(pwd)/build-asan"
    ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
        run_suite build-asan -DTTFLEET_SANITIZE=ON
fi
