#!/usr/bin/env bash
# Builds and runs the consumer project (tests/consumer) against transient the way users take it:
#   package       install the build tree into a scratch prefix; find_package and pkg-config
#   deb           cpack -G DEB in the build tree, dpkg -x into a scratch root; find_package and
#                 pkg-config from it; its `transient` command and man page
#   subdirectory  add_subdirectory of the source tree
#   fetchcontent  FetchContent from the source tree's git repository at its HEAD commit
# The consumer is built Release, with the compiler and flags of the tree under test.
# Usage: check.sh MODE BUILD_DIR SOURCE_DIR CXX VERSION [CXXFLAGS]
set -euo pipefail
mode=$1 build_dir=$2 source_dir=$3 cxx=$4 version=$5 cxxflags=${6:-}
consumer_src="$source_dir/tests/consumer"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# configure_and_run NAME [CMAKE ARGS...]: configures, builds and runs one consumer.
configure_and_run() {
  local name=$1
  shift
  cmake -S "$consumer_src" -B "$work/$name" -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_COMPILER="$cxx" \
    -DCMAKE_CXX_FLAGS="$cxxflags" -DTRANSIENT_EXPECTED_VERSION="$version" "$@" >"$work/$name.log" 2>&1 ||
    { cat "$work/$name.log" >&2; exit 1; }
  cmake --build "$work/$name" -j 2 >>"$work/$name.log" 2>&1 || { cat "$work/$name.log" >&2; exit 1; }
  "$work/$name/consumer"
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
}

case "$mode" in
  package)
    cmake --install "$build_dir" --prefix "$work/prefix" >/dev/null
    configure_and_run cmake-package -DCMAKE_PREFIX_PATH="$work/prefix"
    with_pkg_config "$work/prefix"
    echo "consumer: the installed CMake package and pkg-config file both work"
    ;;
  deb)
    (cd "$work" && cpack -G DEB --config "$build_dir/CPackConfig.cmake" -B "$work/package" >"$work/cpack.log" 2>&1) ||
      { cat "$work/cpack.log" >&2; exit 1; }
    deb="$work/package/transient_${version}_amd64.deb"
    [ -f "$deb" ] || { echo "no $deb; cpack made: $(ls "$work/package")" >&2; exit 1; }
    info=$(dpkg-deb --info "$deb")  # not piped into grep -q: pipefail would see dpkg-deb's SIGPIPE
    grep -q "Package: transient" <<<"$info" || { echo "not a transient package: $info" >&2; exit 1; }
    dpkg -x "$deb" "$work/root"
    configure_and_run cmake-deb -DCMAKE_PREFIX_PATH="$work/root/usr"
    with_pkg_config "$work/root/usr"
    [ "$("$work/root/usr/bin/transient" --version)" = "transient $version" ] ||
      { echo "the packaged command does not say 'transient $version'" >&2; exit 1; }
    page="$work/root/usr/share/man/man1/transient.1"
    [ -f "$page" ] || { echo "the man page is not in the package" >&2; exit 1; }
    MANWIDTH=80 man -l "$page" >"$work/man.txt" 2>"$work/man.err" || { cat "$work/man.err" >&2; exit 1; }
    grep -q "transient serve" "$work/man.txt" || { echo "the man page does not render" >&2; exit 1; }
    [ ! -s "$work/man.err" ] || { echo "man warns:" >&2; cat "$work/man.err" >&2; exit 1; }
    echo "consumer: $(basename "$deb") installs a working library, CMake package, pkg-config file, command and man page"
    ;;
  subdirectory)
    configure_and_run subdirectory -DTRANSIENT_CONSUMER_MODE=subdirectory -DTRANSIENT_SOURCE="$source_dir"
    echo "consumer: add_subdirectory works"
    ;;
  fetchcontent)
    commit=$(git -C "$source_dir" rev-parse HEAD)
    if [ -n "$(git -C "$source_dir" status --porcelain --untracked-files=no)" ]; then
      echo "note: FetchContent takes the committed HEAD ($commit); uncommitted changes are not in it" >&2
    fi
    configure_and_run fetchcontent -DTRANSIENT_CONSUMER_MODE=fetchcontent -DTRANSIENT_SOURCE="$source_dir" \
      -DTRANSIENT_GIT_TAG="$commit"
    echo "consumer: FetchContent works"
    ;;
  *)
    echo "check.sh: unknown mode '$mode' (package, deb, subdirectory, fetchcontent)" >&2
    exit 2
    ;;
esac
