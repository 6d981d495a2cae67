#!/usr/bin/env bash
# Writes a `docker save` archive of a busybox image (docker.io/library/busybox:latest) made
# from the host's busybox-static, for `corralctl image import` in the guest (no network there).
#   busybox-image.sh OUT.tar
set -euo pipefail
out="$1"
busybox=${BUSYBOX:-/bin/busybox}
{ ldd "$busybox" 2>&1 || true; } | grep -q 'not a dynamic' ||
  { echo "busybox-image: $busybox must be busybox-static (apt-get install busybox-static)" >&2; exit 1; }
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/rootfs/bin" "$tmp/rootfs/etc" "$tmp/rootfs"/{tmp,proc,sys,dev,root}
cp "$busybox" "$tmp/rootfs/bin/busybox"
for applet in $("$busybox" --list); do
  [ "$applet" = busybox ] || ln -s busybox "$tmp/rootfs/bin/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n' >"$tmp/rootfs/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$tmp/rootfs/etc/group"
mkdir -p "$tmp/image/layer"
tar --numeric-owner --owner=0 --group=0 --sort=name --mtime=@0 -C "$tmp/rootfs" -cf "$tmp/image/layer/layer.tar" .
diff_id="sha256:$(sha256sum "$tmp/image/layer/layer.tar" | cut -d' ' -f1)"
cat >"$tmp/image/config.json" <<JSON
{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],"Cmd":["sh"]},"rootfs":{"type":"layers","diff_ids":["$diff_id"]}}
JSON
cat >"$tmp/image/manifest.json" <<'JSON'
[{"Config":"config.json","RepoTags":["docker.io/library/busybox:latest"],"Layers":["layer/layer.tar"]}]
JSON
tar -C "$tmp/image" -cf "$out" manifest.json config.json layer
