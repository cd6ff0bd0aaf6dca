"""--download against a local HTTP server serving small archives shaped like Flickr8k's: a whole
download, a connection broken midway and resumed, a wrong checksum, a damaged archive."""
import hashlib
import http.server
import io
import os
import threading
import zipfile

import pytest
from PIL import Image

from data_loader import load_dataset
from inputs.download import Archive, DownloadError, download_dataset


def zip_bytes(files: dict) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as bundle:
        for name, content in files.items():
            bundle.writestr(name, content)
    return buffer.getvalue()


def flickr8k_like_archives() -> dict:
    """Flickr8k_text.zip holds loose text files; Flickr8k_Dataset.zip a Flicker8k_Dataset/ folder; both
    carry the __MACOSX folder the real ones have."""
    names = [f"{i}_a.jpg" for i in range(8)]
    tokens = "".join(f"{name}#{k}\tA dog runs on grass number {k} .\n" for name in names for k in range(5))
    text = {"Flickr8k.token.txt": tokens, "Flickr_8k.trainImages.txt": "\n".join(names[:6]) + "\n",
            "Flickr_8k.devImages.txt": names[6] + "\n", "Flickr_8k.testImages.txt": names[7] + "\n",
            "__MACOSX/._Flickr8k.token.txt": "resource fork"}
    images = {}
    for index, name in enumerate(names):
        jpeg = io.BytesIO()
        Image.new("RGB", (32, 24), (index * 30, 80, 120)).save(jpeg, "JPEG")
        images[f"Flicker8k_Dataset/{name}"] = jpeg.getvalue()
    images["__MACOSX/Flicker8k_Dataset/._0_a.jpg"] = b"x"
    return {"/Flickr8k_text.zip": zip_bytes(text), "/Flickr8k_Dataset.zip": zip_bytes(images)}


class Server:
    """Serves `files` on 127.0.0.1, honours Range requests, and can cut one response short."""

    def __init__(self, files: dict):
        self.files, self.break_next, self.requests = dict(files), set(), []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                server.requests.append((self.path, self.headers.get("Range")))
                if self.path not in server.files:
                    self.send_error(404)
                    return
                body, start = server.files[self.path], 0
                if self.headers.get("Range"):
                    start = int(self.headers["Range"].split("=")[1].rstrip("-"))
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                if self.path in server.break_next:  # half the bytes, then the connection drops
                    server.break_next.discard(self.path)
                    self.wfile.write(body[start:start + (len(body) - start) // 2])
                    self.wfile.flush()
                    self.connection.shutdown(2)
                    return
                self.wfile.write(body[start:])

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def archives(self, md5s: dict | None = None):
        md5s = md5s or {path: hashlib.md5(body).hexdigest() for path, body in self.files.items()}
        return [Archive(self.url + "/Flickr8k_text.zip", md5s["/Flickr8k_text.zip"], "Flickr8k_text", wrap=True),
                Archive(self.url + "/Flickr8k_Dataset.zip", md5s["/Flickr8k_Dataset.zip"], "Flicker8k_Dataset")]


@pytest.fixture
def server():
    serving = Server(flickr8k_like_archives())
    yield serving
    serving.httpd.shutdown()


def test_download_unpacks_into_the_layout_preprocess_reads(server, tmp_path):
    data_dir = str(tmp_path / "flickr8k")
    download_dataset("flickr8k", data_dir, server.archives())
    assert sorted(os.listdir(data_dir)) == ["Flicker8k_Dataset", "Flickr8k_text"]  # archives removed, no __MACOSX
    dataset = load_dataset(data_dir)
    assert dataset.layout == "flickr8k" and [len(dataset.splits[s]) for s in ("train", "dev", "test")] == [6, 1, 1]
    assert len(os.listdir(os.path.join(data_dir, "Flicker8k_Dataset"))) == 8
    server.requests.clear()
    download_dataset("flickr8k", data_dir, server.archives())  # already there: nothing fetched
    assert server.requests == []


def test_broken_connection_resumes_where_it_stopped(server, tmp_path):
    data_dir = str(tmp_path / "flickr8k")
    server.break_next.add("/Flickr8k_Dataset.zip")
    with pytest.raises(DownloadError, match="run the same command again to resume"):
        download_dataset("flickr8k", data_dir, server.archives())
    partial = os.path.join(data_dir, "Flickr8k_Dataset.zip.part")
    got = os.path.getsize(partial)
    assert 0 < got < len(server.files["/Flickr8k_Dataset.zip"])
    assert sorted(os.listdir(data_dir)) == ["Flickr8k_Dataset.zip.part", "Flickr8k_text"]  # nothing half-unpacked
    server.requests.clear()
    download_dataset("flickr8k", data_dir, server.archives())
    assert server.requests == [("/Flickr8k_Dataset.zip", f"bytes={got}-")]
    assert len(load_dataset(data_dir).captions) == 8


def test_wrong_checksum_deletes_the_file_and_unpacks_nothing(server, tmp_path):
    data_dir = str(tmp_path / "flickr8k")
    archives = server.archives({"/Flickr8k_text.zip": "0" * 32, "/Flickr8k_Dataset.zip": "0" * 32})
    with pytest.raises(DownloadError, match="checksum mismatch.*deleted"):
        download_dataset("flickr8k", data_dir, archives)
    assert os.listdir(data_dir) == []


def test_damaged_archive_and_missing_file_say_what_to_do(server, tmp_path):
    server.files["/Flickr8k_text.zip"] = b"PK not really a zip"
    with pytest.raises(DownloadError, match="cannot be unpacked.*delete it"):
        download_dataset("flickr8k", str(tmp_path / "a"), server.archives())
    assert not [name for name in os.listdir(tmp_path / "a") if name.startswith(".unpacking")]
    missing = [Archive(server.url + "/absent.zip", "0" * 32, "Flickr8k_text", wrap=True)]
    with pytest.raises(DownloadError, match="HTTP 404"):
        download_dataset("flickr8k", str(tmp_path / "b"), missing)


def test_preprocess_download_flag(server, tmp_path, monkeypatch):
    from inputs import download
    from config import SAMPLE_DATA_DIR
    from conftest import tiny_config
    from preprocess import preprocess

    monkeypatch.setitem(download.DATASETS, "flickr8k", server.archives())
    data_dir = str(tmp_path / "flickr8k")
    metadata = preprocess(tiny_config(data_dir, str(tmp_path / "run"), download="flickr8k"))
    assert metadata["images"]["train"] == {"in_split": 6, "with_features": 6}
    with pytest.raises(ValueError, match="give --data_dir"):
        preprocess(tiny_config(SAMPLE_DATA_DIR, str(tmp_path / "run2"), download="flickr8k"))
