# tests/debsrc.sh - sourced by the scripts that run a project's own tests
# from its Debian source package (libnbd-interop.sh, qemu-iotests.sh).
#
#   debsrc_dir CACHE SOURCE BINARY
#
# prints the directory of SOURCE's unpacked source under CACHE/src,
# fetching it first when it is not there: `apt-get source SOURCE=V`,
# V being the source version of the installed package BINARY, through
# a private deb-src list under CACHE/apt (the system's apt lists are
# not touched).  Fails (status 1, nothing printed) when it cannot.

debsrc_fetch() {   # CACHE SOURCE BINARY
    local cache=$1 src=$2 bin=$3
    local list=$cache/apt/sources.list
    local opts=(-o "Dir::Etc::SourceList=$list"
                -o "Dir::Etc::SourceParts=$cache/apt/parts.d"
                -o "Dir::State::Lists=$cache/apt/lists"
                -o "Dir::Cache=$cache/apt/cache"
                -o "APT::Get::List-Cleanup=false")
    mkdir -p "$cache/apt/lists/partial" "$cache/apt/cache" \
             "$cache/apt/parts.d" "$cache/src"
    cat > "$list" <<LIST
deb-src http://deb.debian.org/debian bookworm main
deb-src http://deb.debian.org/debian-security bookworm-security main
deb-src http://deb.debian.org/debian bookworm-updates main
LIST
    local ver
    ver=$(dpkg-query -W -f '${source:Version}' "$bin")
    apt-get -q "${opts[@]}" update >/dev/null || return 1
    # Unpacked aside and moved in whole, so an interrupted or failed
    # fetch leaves nothing a later run would take for the source.  Its
    # progress goes to standard error: debsrc_dir's standard output is
    # the directory and nothing else.
    local tmp
    tmp=$(mktemp -d "$cache/fetch.XXXXXX") || return 1
    if ! (cd "$tmp" && apt-get -q "${opts[@]}" source "$src=$ver") >&2; then
        rm -rf "$tmp"
        return 1
    fi
    mv "$tmp"/* "$cache/src/" && rm -rf "$tmp"
}

debsrc_dir() {   # CACHE SOURCE BINARY
    local cache=$1 src=$2 bin=$3 dir
    mkdir -p "$cache" || return 1
    # One fetch at a time: tests running side by side share the cache,
    # and a second one waits for the first one's source.
    dir=$(
        exec 9>"$cache/.fetch-lock"
        flock 9
        dir=$(ls -d "$cache"/src/"$src"-*/ 2>/dev/null | head -1)
        if [ -z "$dir" ]; then
            echo "fetching $src's source into $cache ..." >&2
            debsrc_fetch "$cache" "$src" "$bin" || exit 1
            dir=$(ls -d "$cache"/src/"$src"-*/ 2>/dev/null | head -1)
        fi
        echo "$dir"
    ) || return 1
    [ -n "$dir" ] || return 1
    echo "${dir%/}"
}
