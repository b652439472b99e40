#!/usr/bin/env bash
# Build the embedded Elasticsearch node: fetch jars from Maven Central into JARDIR (once) and
# compile src/ with javac --release 17 into CLASSDIR (when the sources changed). Idempotent, quiet.
#
#   infra/elasticsearch/build.sh JARDIR CLASSDIR [--cds]
#
# CLASSDIR gets the compiled classes and the same classes as CLASSDIR/ctlake-es.jar. With --cds it
# also gets CLASSDIR/ctlake-es.jsa, a class-data-sharing archive of the start-up classes (made by
# starting the node once on free ports under a temporary home, ~10 s). The archive halves the
# start-up CPU and lowers RSS; it is only valid with -cp "CLASSDIR/ctlake-es.jar:JARDIR/*" and the
# same java. Run commands: README.md.
#
# Env: JAVA_HOME (default /usr/lib/jvm/java-17-openjdk-amd64), MVN (default mvn),
#      MVN_ARGS (e.g. MVN_ARGS=-Dmaven.repo.local=/path/to/m2).
set -euo pipefail

usage() {
    echo "usage: $0 JARDIR CLASSDIR [--cds]" >&2
    exit 2
}
[ $# -eq 2 ] || [ $# -eq 3 ] || usage
cds=0
if [ $# -eq 3 ]; then
    [ "$3" = "--cds" ] || usage
    cds=1
fi
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
jardir="$(realpath -m "$1")"      # absolute: Maven resolves relative paths against this folder
classdir="$(realpath -m "$2")"
export JAVA_HOME="${JAVA_HOME:-/usr/lib/jvm/java-17-openjdk-amd64}"
javac="$JAVA_HOME/bin/javac"
jar="$JAVA_HOME/bin/jar"
java="$JAVA_HOME/bin/java"
mvn="${MVN:-mvn}"
if [ ! -x "$javac" ]; then
    echo "build.sh: no javac at $javac (set JAVA_HOME to a JDK 17+)" >&2
    exit 1
fi

# two builds at once (e.g. parallel test workers) wait for each other
mkdir -p "$(dirname "$classdir")" "$(dirname "$jardir")"
if command -v flock >/dev/null 2>&1; then
    exec 9>"$classdir.lock"
    flock 9
fi

hash_of() { sha256sum "$@" | sha256sum | cut -c1-16; }

# 1. jars: the marker records which pom they came from; a changed pom re-resolves.
pom_hash="$(hash_of "$here/pom.xml")"
jar_marker="$jardir/.ctlake-complete"
if [ ! -f "$jar_marker" ] || [ "$(cat "$jar_marker")" != "$pom_hash" ]; then
    tmp="$jardir.tmp.$$"
    rm -rf "$tmp"
    mkdir -p "$tmp"
    # shellcheck disable=SC2086
    if ! "$mvn" -q -B -f "$here/pom.xml" ${MVN_ARGS:-} dependency:copy-dependencies \
            -DoutputDirectory="$tmp" -DincludeScope=runtime >"$tmp.log" 2>&1; then
        cat "$tmp.log" >&2
        rm -rf "$tmp" "$tmp.log"
        echo "build.sh: resolving the Elasticsearch jars failed" >&2
        exit 1
    fi
    rm -f "$tmp.log"
    echo "$pom_hash" >"$tmp/.ctlake-complete"
    rm -rf "$jardir"
    mv "$tmp" "$jardir"
fi

# 2. classes: recompile when any source, the jar set or javac changed.
mapfile -t sources < <(cd "$here" && find src -name '*.java' | LC_ALL=C sort)
src_hash="$( (cd "$here" && hash_of "${sources[@]}"; cat "$jar_marker"; "$javac" -version 2>&1) | sha256sum | cut -c1-16)"
class_marker="$classdir/.ctlake-complete"
if [ ! -f "$class_marker" ] || [ "$(cat "$class_marker")" != "$src_hash" ]; then
    tmp="$classdir.tmp.$$"
    rm -rf "$tmp"
    mkdir -p "$tmp"
    if ! (cd "$here" && "$javac" --release 17 -nowarn -encoding UTF-8 -d "$tmp" -cp "$jardir/*" "${sources[@]}"); then
        rm -rf "$tmp"
        echo "build.sh: compiling $here/src failed" >&2
        exit 1
    fi
    "$jar" --create --file "$tmp/ctlake-es.jar" -C "$tmp" org
    echo "$src_hash" >"$tmp/.ctlake-complete"
    rm -rf "$classdir"
    mv "$tmp" "$classdir"
fi

# 3. optional CDS archive; made in place because it records the class path it was made with.
if [ "$cds" = 1 ] && [ ! -f "$classdir/ctlake-es.jsa" ]; then
    home="$(mktemp -d "${TMPDIR:-/tmp}/ctlake-es-cds.XXXXXX")"
    rm -f "$classdir/ctlake-es.jsa.tmp"
    if ! "$java" -XX:ArchiveClassesAtExit="$classdir/ctlake-es.jsa.tmp" -Xlog:cds=off -Xlog:cds+dynamic=off \
            -Xms512m -Xmx512m -cp "$classdir/ctlake-es.jar:$jardir/*" org.elasticsearch.node.CtlakeElasticsearch \
            --home "$home" --http-port 0 --transport-port 0 --exit-after-start >"$home.log" 2>&1 \
            || [ ! -s "$classdir/ctlake-es.jsa.tmp" ]; then
        cat "$home.log" >&2
        rm -rf "$home" "$home.log" "$classdir/ctlake-es.jsa.tmp"
        echo "build.sh: making the CDS archive failed" >&2
        exit 1
    fi
    rm -rf "$home" "$home.log"
    mv "$classdir/ctlake-es.jsa.tmp" "$classdir/ctlake-es.jsa"
fi
