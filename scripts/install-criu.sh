#!/usr/bin/env bash
# Installs CRIU 4.1 from Debian trixie into a private directory (default
# /opt/deltabox/criu), with trixie's own loader and libraries: Debian 12's CRIU 3.17 fails
# on this kernel (vDSO). Nothing outside that directory changes. Idempotent; optional
# (DeltaBox's checkpoints do not need CRIU; `deltabox bench` uses it as a baseline).
set -euo pipefail
dest=${DELTABOX_CRIU_DIR:-/opt/deltabox/criu}
if [ -x "$dest/criu" ] && "$dest/criu" check >/dev/null 2>&1; then exit 0; fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/lists/partial" "$work/cache/archives/partial" "$work/debs"
echo "deb http://deb.debian.org/debian trixie main" > "$work/sources.list"
apt_opts=(-o Dir::Etc::sourcelist="$work/sources.list" -o Dir::Etc::sourceparts=/dev/null
          -o Dir::State::Lists="$work/lists" -o Dir::Cache="$work/cache"
          -o APT::Get::List-Cleanup=0 -o APT::Sandbox::User=root)
echo "deltabox: installing CRIU 4.1 from Debian trixie into $dest" >&2
apt-get "${apt_opts[@]}" update -qq >/dev/null
# criu and its shared libraries' closure, with trixie's libc and loader.
(cd "$work/debs" && apt-get "${apt_opts[@]}" download -qq criu libcompel1 libc6 libbsd0 libmd0 \
  libgnutls30t64 libnettle8t64 libhogweed6t64 libgmp10 libp11-kit0 libffi8 libidn2-0 \
  libunistring5 libtasn1-6 libnet1 libnftables1 libmnl0 libnftnl11 libjansson4 libxtables12 \
  libnl-3-200 libprotobuf-c1 libuuid1 libedit2 libtinfo6 libcap2 >/dev/null)
rm -rf "$dest.new" && mkdir -p "$dest.new/root"
for d in "$work"/debs/*.deb; do dpkg-deb -x "$d" "$dest.new/root"; done
cat > "$dest.new/criu" <<WRAP
#!/bin/sh
# CRIU from Debian trixie, run with its own loader and libraries (see install-criu.sh).
r=$dest/root
exec "\$r/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2" --library-path "\$r/usr/lib/x86_64-linux-gnu" "\$r/usr/sbin/criu" "\$@"
WRAP
chmod +x "$dest.new/criu"
rm -rf "$dest" && mv "$dest.new" "$dest"
"$dest/criu" check
