#!/usr/bin/env bash
# Builds and runs the consumer project (tests/consumer) against transient the way users take it:
#   package       install the build tree into a scratch prefix, then move it; find_package and
#                 pkg-config from where it was moved
#   deb           cpack -G DEB in the build tree, dpkg -x into a scratch root; find_package and
#                 pkg-config from it; its `transient` command and man page
#   subdirectory  add_subdirectory of the source tree
#   fetchcontent  FetchContent from the source tree's git repository at its HEAD commit
# The consumer is built Release, with the compiler and flags of the tree under test. Where the
# tree under test found Boost, every mode also builds and runs the Boost.Asio consumer
# (boost_asio_main.cpp); where it built transient::uring, the io_uring consumer (uring_main.cpp).
# Both are required then: a failure to build or run either fails the check.
# Usage: check.sh MODE BUILD_DIR SOURCE_DIR CXX VERSION [CXXFLAGS]
set -euo pipefail
mode=$1 build_dir=$(realpath "$2") source_dir=$(realpath "$3") cxx=$4 version=$5 cxxflags=${6:-}
consumer_src="$source_dir/tests/consumer"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# cached NAME: the value of NAME in the build tree's CMake cache (empty if absent).
cached() {
  sed -n "s/^$1:[A-Z]*=//p" "$build_dir/CMakeCache.txt"
}
[ -f "$build_dir/CMakeCache.txt" ] || { echo "no CMakeCache.txt in $build_dir: configure it first" >&2; exit 2; }
with_boost=$(cached TRANSIENT_CONSUMER_EXPECTS_BOOST)
with_uring=$(cached TRANSIENT_CONSUMER_EXPECTS_URING)
[ "$with_boost" = ON ] || with_boost=OFF
[ "$with_uring" = ON ] || with_uring=OFF

# configure_and_run NAME [CMAKE ARGS...]: configures, builds and runs one consumer.
configure_and_run() {
  local name=$1
  shift
  cmake -S "$consumer_src" -B "$work/$name" -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_COMPILER="$cxx" \
    -DCMAKE_CXX_FLAGS="$cxxflags" -DTRANSIENT_EXPECTED_VERSION="$version" \
    -DTRANSIENT_CONSUMER_BOOST_ASIO="$with_boost" -DTRANSIENT_CONSUMER_URING="$with_uring" "$@" \
    >"$work/$name.log" 2>&1 || { cat "$work/$name.log" >&2; exit 1; }
  cmake --build "$work/$name" -j 2 >>"$work/$name.log" 2>&1 || { cat "$work/$name.log" >&2; exit 1; }
  "$work/$name/consumer"
  if [ "$with_boost" = ON ]; then "$work/$name/consumer_boost_asio"; fi
  if [ "$with_uring" = ON ]; then "$work/$name/consumer_uring"; fi
}

# with_pkg_config PREFIX: builds main.cpp with the flags of PREFIX's transient.pc (no --define-prefix:
# the file must find its own prefix).
with_pkg_config() {
  local pcdir
  pcdir=$(find "$1" -name transient.pc -printf '%h\n' -quit)
  [ -n "$pcdir" ] || { echo "transient.pc was not installed under $1" >&2; exit 1; }
  local flags
  flags=$(PKG_CONFIG_PATH="$pcdir" pkg-config --cflags --libs transient)
  # shellcheck disable=SC2086 # flag lists
  "$cxx" $cxxflags -O2 -DEXPECTED_VERSION="\"$version\"" "$consumer_src/main.cpp" -o "$work/pc-consumer" $flags
  "$work/pc-consumer"
  [ "$(PKG_CONFIG_PATH="$pcdir" pkg-config --modversion transient)" = "$version" ] ||
    { echo "transient.pc has the wrong version" >&2; exit 1; }
  if [ "$with_boost" = ON ]; then  # Boost.Asio and System are header-only: transient's flags suffice
    # shellcheck disable=SC2086 # flag lists
    "$cxx" $cxxflags -O2 -Wall -Wextra -Wpedantic -Werror "$consumer_src/boost_asio_main.cpp" \
      -o "$work/pc-consumer-boost-asio" $flags
    "$work/pc-consumer-boost-asio"
  fi
  if [ "$with_uring" = ON ]; then
    [ -f "$pcdir/transient-uring.pc" ] || { echo "transient-uring.pc was not installed in $pcdir" >&2; exit 1; }
    local uring_flags
    uring_flags=$(PKG_CONFIG_PATH="$pcdir" pkg-config --cflags --libs transient-uring)
    # shellcheck disable=SC2086 # flag lists
    "$cxx" $cxxflags -O2 -Wall -Wextra -Wpedantic -Werror "$consumer_src/uring_main.cpp" \
      -o "$work/pc-consumer-uring" $uring_flags
    "$work/pc-consumer-uring"
  fi
}

# no_build_paths PREFIX: no installed CMake or pkg-config file names the liburing of the build
# machine (the package finds liburing where it is used, so a moved install keeps working).
no_build_paths() {
  local liburing
  liburing=$(cached TRANSIENT_LIBURING_LIBRARY)
  [ -n "$liburing" ] || return 0
  if grep -rlF "$liburing" "$1" --include='*.cmake' --include='*.pc' >"$work/paths.txt"; then
    echo "installed files name the build machine's $liburing:" >&2
    cat "$work/paths.txt" >&2
    exit 1
  fi
}

case "$mode" in
  package)
    # Installed under one prefix, then moved: the package must work where it is, not where it was put.
    cmake --install "$build_dir" --prefix "$work/installed" >/dev/null
    mv "$work/installed" "$work/prefix"
    no_build_paths "$work/prefix"
    if [ -f "$build_dir/tools/transient-fixture" ]; then  # the tools were built: the fixture is in libexec
      [ -x "$work/prefix/libexec/transient/transient-fixture" ] ||
        { echo "transient-fixture was not installed in libexec/transient" >&2; exit 1; }
    fi
    configure_and_run cmake-package -DCMAKE_PREFIX_PATH="$work/prefix"
    with_pkg_config "$work/prefix"
    echo "consumer: the installed (and moved) CMake package and pkg-config files work" \
      "(Boost.Asio consumer: $with_boost, io_uring consumer: $with_uring)"
    ;;
  deb)
    (cd "$work" && cpack -G DEB --config "$build_dir/CPackConfig.cmake" -B "$work/package" >"$work/cpack.log" 2>&1) ||
      { cat "$work/cpack.log" >&2; exit 1; }
    deb="$work/package/transient_${version}_amd64.deb"
    [ -f "$deb" ] || { echo "no $deb; cpack made: $(ls "$work/package")" >&2; exit 1; }
    info=$(dpkg-deb --info "$deb")  # not piped into grep -q: pipefail would see dpkg-deb's SIGPIPE
    grep -q "Package: transient" <<<"$info" || { echo "not a transient package: $info" >&2; exit 1; }
    if [ "$with_uring" = ON ]; then  # its command links liburing.so.2
      grep -q "^ Depends:.*liburing2" <<<"$info" || { echo "the package does not depend on liburing2: $info" >&2; exit 1; }
    fi
    dpkg -x "$deb" "$work/root"
    no_build_paths "$work/root"
    configure_and_run cmake-deb -DCMAKE_PREFIX_PATH="$work/root/usr"
    with_pkg_config "$work/root/usr"
    [ "$("$work/root/usr/bin/transient" --version)" = "transient $version" ] ||
      { echo "the packaged command does not say 'transient $version'" >&2; exit 1; }
    page="$work/root/usr/share/man/man1/transient.1"
    [ -f "$page" ] || { echo "the man page is not in the package" >&2; exit 1; }
    MANWIDTH=80 man -l "$page" >"$work/man.txt" 2>"$work/man.err" || { cat "$work/man.err" >&2; exit 1; }
    grep -q "transient serve" "$work/man.txt" || { echo "the man page does not render" >&2; exit 1; }
    [ ! -s "$work/man.err" ] || { echo "man warns:" >&2; cat "$work/man.err" >&2; exit 1; }
    # The drill's test fixture, outside PATH; the packaged drill finds it there (the leak
    # scenario's figures come only from a run of the fixture). Its verdicts are the drill
    # tests' business, not this check's.
    [ -x "$work/root/usr/libexec/transient/transient-fixture" ] ||
      { echo "the package has no /usr/libexec/transient/transient-fixture" >&2; exit 1; }
    [ ! -e "$work/root/usr/bin/transient-fixture" ] || { echo "the test fixture is on PATH" >&2; exit 1; }
    "$work/root/usr/bin/transient" drill --quick --json >"$work/drill.json" 2>"$work/drill.err" || true
    if grep -q "test fixture is missing" "$work/drill.json" || ! grep -q '"leak_per_connection"' "$work/drill.json"; then
      echo "the packaged drill did not run the packaged fixture:" >&2
      cat "$work/drill.json" "$work/drill.err" >&2
      exit 1
    fi
    echo "consumer: $(basename "$deb") installs a working library, CMake package, pkg-config files, command," \
      "man page and the drill's fixture (Boost.Asio consumer: $with_boost, io_uring consumer: $with_uring)"
    ;;
  subdirectory)
    configure_and_run subdirectory -DTRANSIENT_CONSUMER_MODE=subdirectory -DTRANSIENT_SOURCE="$source_dir"
    echo "consumer: add_subdirectory works (Boost.Asio consumer: $with_boost, io_uring consumer: $with_uring)"
    ;;
  fetchcontent)
    commit=$(git -C "$source_dir" rev-parse HEAD)
    if [ -n "$(git -C "$source_dir" status --porcelain --untracked-files=no)" ]; then
      echo "note: FetchContent takes the committed HEAD ($commit); uncommitted changes are not in it" >&2
    fi
    configure_and_run fetchcontent -DTRANSIENT_CONSUMER_MODE=fetchcontent -DTRANSIENT_SOURCE="$source_dir" \
      -DTRANSIENT_GIT_TAG="$commit"
    echo "consumer: FetchContent works (Boost.Asio consumer: $with_boost, io_uring consumer: $with_uring)"
    ;;
  *)
    echo "check.sh: unknown mode '$mode' (package, deb, subdirectory, fetchcontent)" >&2
    exit 2
    ;;
esac
