"""End-to-end check of the web page in a real headless Chromium (run by tests/browser_check.sh).

Trains a tiny run (generated shapes, untrained encoder), starts `streamlit run app.py` on a free
localhost port, uploads one image through the page's file input, waits for the caption, and checks
that it is the caption predict.py gives for the same file. Exit status 0 only when that holds.
Optionally saves a screenshot: --run_dir DIR uses an existing trained run (e.g. Flickr8k) instead,
--package DIR --weights PATH the pretrained package (the page's first choice) with those encoder weights.
"""
from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, PROJECT)
sys.path.insert(0, os.path.join(PROJECT, "data"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def tiny_run(root: str) -> tuple[str, str]:
    """A tiny trained run under root/runs/tiny, and one of its images."""
    from make_sample import make_sample

    data_dir = os.path.join(root, "tiny")
    make_sample(data_dir, seed=3, split_sizes={"train": 10, "dev": 3, "test": 3})
    run_dir = os.path.join(root, "runs", "tiny")
    subprocess.run([sys.executable, os.path.join(PROJECT, "train.py"), "--data_dir", data_dir, "--run_dir", run_dir,
                    "--encoder", "mobilenet_v2", "--weights", "none", "--epochs", "2", "--min_word_count", "1",
                    "--units", "16", "--embedding_dim", "16"], check=True, capture_output=True)
    images = os.path.join(data_dir, "Flicker8k_Dataset")
    return run_dir, os.path.join(images, sorted(os.listdir(images))[0])


def wait_for_server(url: str, server: subprocess.Popen, seconds: float = 120) -> None:
    import urllib.request

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"streamlit exited early with status {server.returncode}")
        try:
            with urllib.request.urlopen(url + "/_stcore/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"streamlit did not answer at {url} within {seconds:.0f} s")


def caption_in_browser(url: str, image: str, chromium: str, chromedriver: str, screenshot: str) -> str:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,900"):
        options.add_argument(argument)
    browser = webdriver.Chrome(service=Service(chromedriver), options=options)
    try:
        browser.get(url)
        wait = WebDriverWait(browser, 180)
        upload = wait.until(expected_conditions.presence_of_element_located((By.CSS_SELECTOR, "input[type=file]")))
        upload.send_keys(image)
        # The greedy caption is the bold line beside the image; "greedy caption" labels it.
        wait.until(expected_conditions.presence_of_element_located(
            (By.XPATH, "//*[contains(text(), 'greedy caption')]")))
        caption = browser.find_element(
            By.XPATH, "//*[@data-testid='stMarkdownContainer']//strong[not(ancestor::*[@data-testid='stSidebar'])]").text
        if screenshot:
            time.sleep(2)  # let the image finish drawing
            browser.save_screenshot(screenshot)
        return caption
    finally:
        browser.quit()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run_dir", default="", help="an existing trained run (default: train a tiny one)")
    parser.add_argument("--image", default="", help="image to upload (default: one of the tiny run's)")
    parser.add_argument("--package", default="",
                        help="the pretrained package (its own encoder weights unless --weights)")
    parser.add_argument("--weights", default="", help="with --package: other encoder weights than its own")
    parser.add_argument("--screenshot", default="", help="save a PNG of the page with its caption")
    args = parser.parse_args()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    chromedriver = shutil.which("chromedriver")
    if not chromium or not chromedriver:
        print("SKIPPED: chromium and chromedriver are not installed (tests/browser_check.sh installs them)")
        return 0
    with tempfile.TemporaryDirectory() as root:
        package = os.path.join(root, "no_package")
        if args.package:
            run_dir, image, package = os.path.join(root, "runs", "none"), os.path.abspath(args.image), \
                os.path.abspath(args.package)
        elif args.run_dir:
            # A runs folder holding only this run, so the page selects it.
            run_dir, image = os.path.join(root, "runs", os.path.basename(os.path.normpath(args.run_dir))), \
                os.path.abspath(args.image)
            os.makedirs(os.path.dirname(run_dir))
            os.symlink(os.path.abspath(args.run_dir), run_dir)
        else:
            run_dir, image = tiny_run(root)
        chosen = ["--run_dir", package if args.package else run_dir]
        if args.package and args.weights:
            chosen += ["--weights", args.weights]
        # The caption is predict.py's first line; a guided run prints its tags on the next.
        expected = subprocess.run([sys.executable, os.path.join(PROJECT, "predict.py"), *chosen,
                                   "--image_path", image], check=True, capture_output=True,
                                  text=True).stdout.strip().splitlines()[0]
        port = free_port()
        environment = dict(os.environ, CAPTION_RUNS_DIR=os.path.dirname(run_dir), CAPTION_PRETRAINED_DIR=package,
                           CAPTION_WEIGHTS=args.weights)
        server = subprocess.Popen([sys.executable, "-m", "streamlit", "run", os.path.join(PROJECT, "app.py"),
                                   "--server.port", str(port), "--server.address", "127.0.0.1",
                                   "--server.headless", "true", "--browser.gatherUsageStats", "false"],
                                  env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            url = f"http://127.0.0.1:{port}"
            wait_for_server(url, server)
            caption = caption_in_browser(url, image, chromium, chromedriver, args.screenshot)
        finally:
            server.terminate()
            server.wait(timeout=30)
    print(f"page caption:    {caption!r}\npredict.py gave: {expected!r}")
    if caption != expected:
        print("FAILED: the page shows a different caption than predict.py")
        return 1
    print("PASSED: the page in headless Chromium captions an uploaded image as predict.py does")
    return 0


if __name__ == "__main__":
    sys.exit(main())
