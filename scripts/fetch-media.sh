#!/usr/bin/env bash
# Fetches the sample media from Debian's opencv-doc package (Apache-2.0 / BSD-3-Clause) into
# .cache/media: no root needed for the download itself, only a package list (apt-get update).
set -euo pipefail
dest=${1:-.cache/media}
want=(vtest.avi messi5.jpg basketball1.png basketball2.png Megamind.avi squirrel_cls.jpg
      classification_classes_ILSVRC2012.txt object_detection_classes_coco.txt copyright)
missing=0
for f in "${want[@]}"; do [ -s "$dest/$f" ] || missing=1; done
[ "$missing" = 0 ] && exit 0

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
if ! apt-get download opencv-doc >/dev/null 2>&1; then
    # A fresh machine may have no package lists yet; apt-get update needs root.
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq >/dev/null
    elif command -v sudo >/dev/null; then
        sudo apt-get update -qq >/dev/null
    fi
    apt-get download opencv-doc >/dev/null 2>&1 || {
        echo "fetch-media: could not download Debian's opencv-doc (expected 'apt-get download opencv-doc' to work)" >&2
        exit 1
    }
fi
dpkg -x opencv-doc_*.deb x
cd - >/dev/null
mkdir -p "$dest"
root="$work/x/usr/share/doc/opencv-doc"
for f in vtest.avi messi5.jpg basketball1.png basketball2.png Megamind.avi squirrel_cls.jpg; do
    cp "$root/examples/data/$f" "$dest/$f"
done
cp "$root/examples/data/dnn/classification_classes_ILSVRC2012.txt" "$dest/"
cp "$root/examples/data/dnn/object_detection_classes_coco.txt" "$dest/"
cp "$root/copyright" "$dest/copyright"
echo "fetch-media: sample media in $dest"
