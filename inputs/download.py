"""Fetching a public dataset (`preprocess.py --download`) into the layout preprocess.py reads.

    python preprocess.py --download flickr8k --data_dir data/flickr8k

Each archive is downloaded to `<name>.part`, resumed with an HTTP Range request after a broken
connection, checked against its size (as the server announced it) and its MD5, and only then
renamed. Unpacking goes into a temporary folder beside the target, which is renamed into place
when complete, so an interrupted or failed run never leaves a half-unpacked folder behind.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import sys
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from http.client import HTTPException
from typing import Dict, List, Optional

CHUNK = 1 << 20


@dataclass(frozen=True)
class Archive:
    url: str
    md5: str
    # Where the unpacked content goes, relative to the dataset folder: `folder` is either a folder the
    # archive holds at its top level (moved into place), or, with `wrap`, a new folder for loose files.
    folder: str
    wrap: bool = False


_FLICKR8K = "https://github.com/jbrownlee/Datasets/releases/download/Flickr8k/"
# The MD5s are those the R torchvision package (mlverse) checks for the same two files; this
# machine has no network, so they were not recomputed here.
DATASETS: Dict[str, List[Archive]] = {
    "flickr8k": [
        Archive(_FLICKR8K + "Flickr8k_text.zip", "bf6c1abcb8e4a833b7f922104de18627", "Flickr8k_text", wrap=True),
        Archive(_FLICKR8K + "Flickr8k_Dataset.zip", "f18a1e2920de5bd84dae7cf08ec78978", "Flicker8k_Dataset"),
    ],
}


class DownloadError(OSError):
    """A download or unpacking that failed; the message says what to do next."""


def _md5(path: str) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "md5").hexdigest()


def _total_size(response, already: int) -> Optional[int]:
    content_range = response.headers.get("Content-Range", "")
    if response.status == 206 and "/" in content_range and not content_range.endswith("/*"):
        return int(content_range.rsplit("/", 1)[1])
    length = response.headers.get("Content-Length")
    return int(length) + (already if response.status == 206 else 0) if length else None


def fetch(url: str, path: str, md5: str, timeout: float = 60.0) -> None:
    """Downloads `url` to `path` (resuming `path.part`), checking size and MD5; raises DownloadError."""
    from tqdm import tqdm

    partial = path + ".part"
    already = os.path.getsize(partial) if os.path.exists(partial) else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={already}-"} if already else {})
    name = os.path.basename(path)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            if already and response.status != 206:
                already = 0  # the server ignored the range: start again
            total = _total_size(response, already)
            with open(partial, "ab" if already else "wb") as handle, \
                    tqdm(total=total, initial=already, unit="B", unit_scale=True, desc=name) as progress:
                for block in iter(lambda: response.read(CHUNK), b""):
                    handle.write(block)
                    progress.update(len(block))
    except urllib.error.HTTPError as error:
        if error.code == 416 and already:  # asked for bytes past the end: the part file is complete
            total = already
        else:
            raise DownloadError(f"{url}: HTTP {error.code} {error.reason}; check the address and your network, "
                                f"then run the same command again") from None
    except (urllib.error.URLError, HTTPException, OSError) as error:
        got = os.path.getsize(partial) if os.path.exists(partial) else 0
        raise DownloadError(f"{name}: download interrupted after {got:,} bytes ({error}); run the same command "
                            f"again to resume from there") from None
    size = os.path.getsize(partial)
    if total is not None and size != total:
        raise DownloadError(f"{name}: got {size:,} of {total:,} bytes; run the same command again to resume")
    actual = _md5(partial)
    if actual != md5:
        os.remove(partial)  # a corrupt file cannot be resumed
        raise DownloadError(f"{name}: checksum mismatch (MD5 {actual}, expected {md5}); the file was deleted. "
                            f"Run the same command again to download it afresh; if it fails again, the server "
                            f"sends a different file: download it by hand and check it")
    os.replace(partial, path)


def unpack(archive_path: str, data_dir: str, archive: Archive) -> None:
    """Unpacks into a temporary folder, then renames the finished folder into place."""
    target = os.path.join(data_dir, archive.folder)
    staging = os.path.join(data_dir, f".unpacking_{archive.folder}")
    shutil.rmtree(staging, ignore_errors=True)  # left by an interrupted earlier run
    try:
        with zipfile.ZipFile(archive_path) as bundle:
            members = [m for m in bundle.namelist() if not m.startswith("__MACOSX")]
            bundle.extractall(staging, members)
        source = staging if archive.wrap else os.path.join(staging, archive.folder)
        if not os.path.isdir(source):
            raise DownloadError(f"{archive_path}: has no top-level folder {archive.folder}/")
        os.replace(source, target)
    except (zipfile.BadZipFile, OSError) as error:
        if isinstance(error, DownloadError):
            raise
        raise DownloadError(f"{archive_path}: cannot be unpacked ({error}); delete it and run the same command "
                            f"again") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def download_dataset(name: str, data_dir: str, archives: Optional[List[Archive]] = None) -> str:
    """Makes `data_dir` hold dataset `name`, downloading and unpacking what is missing; returns data_dir."""
    if archives is None:
        if name not in DATASETS:
            raise ValueError(f"--download {name}: unknown dataset; choose one of {', '.join(DATASETS)}")
        archives = DATASETS[name]
    os.makedirs(data_dir, exist_ok=True)
    for archive in archives:
        if os.path.isdir(os.path.join(data_dir, archive.folder)):
            print(f"{name}: {archive.folder}/ already in {data_dir}")
            continue
        archive_path = os.path.join(data_dir, os.path.basename(archive.url))
        if not os.path.exists(archive_path):
            print(f"{name}: downloading {archive.url}", file=sys.stderr)
            fetch(archive.url, archive_path, archive.md5)
        unpack(archive_path, data_dir, archive)
        os.remove(archive_path)  # unpacked and in place: the archive is no longer needed
        print(f"{name}: unpacked {archive.folder}/ into {data_dir}")
    return data_dir
