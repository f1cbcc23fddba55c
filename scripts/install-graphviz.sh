#!/usr/bin/env bash
# Install Graphviz's `dot` program where the machine allows it (Debian/Ubuntu as root).
# Never fails: without `dot`, pgmdl writes DOT source and the tests that need it skip.
if command -v dot >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing Graphviz (Debian package graphviz) ..."
    if apt-get update -qq >/dev/null 2>&1 && \
       DEBIAN_FRONTEND=noninteractive apt-get install -y -qq graphviz >/dev/null 2>&1; then
        exit 0
    fi
fi
echo "note: Graphviz's dot was not installed (needs root and apt-get, or: brew install graphviz);" \
     "rendering writes DOT source instead and the tests that need dot are skipped."
exit 0
