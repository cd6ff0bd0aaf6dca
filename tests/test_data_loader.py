import json
import os

import pytest

from conftest import SHARED_FLICKR, TINY_SPLITS, needs_shared
from inputs.caption_files import DatasetError, parse_captions_csv, parse_token_file
from data_loader import draw_split, load_dataset


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)
    return path


def test_official_layout_is_detected_and_cleaned(tiny_dataset):
    dataset = load_dataset(tiny_dataset)
    assert dataset.layout == "flickr8k" and dataset.split_source == "official split files"
    assert {split: len(names) for split, names in dataset.splits.items()} == TINY_SPLITS
    for captions in dataset.captions.values():
        assert len(captions) == 5
        assert all(caption == caption.lower() and "." not in caption for caption in captions)


def test_kaggle_layout_with_drawn_split(tmp_path):
    images = tmp_path / "kaggle" / "Images"
    images.mkdir(parents=True)
    rows = ["image,caption"] + [f'img{i}.jpg,"A dog, number {i} , runs ."' for i in range(40)]
    write(str(tmp_path / "kaggle" / "captions.txt"), "\n".join(rows) + "\n")
    dataset = load_dataset(str(tmp_path / "kaggle"), split_seed=5)
    assert dataset.layout == "kaggle" and "seed 5" in dataset.split_source
    assert {k: len(v) for k, v in dataset.splits.items()} == {"train": 30, "dev": 5, "test": 5}
    assert dataset.captions["img3.jpg"] == ["a dog number runs"]
    again = load_dataset(str(tmp_path / "kaggle"), split_seed=5)
    assert again.splits == dataset.splits
    assert load_dataset(str(tmp_path / "kaggle"), split_seed=6).splits != dataset.splits


def test_drawn_split_is_proportional_and_disjoint():
    split = draw_split([f"{i}.jpg" for i in range(8000)], seed=1)
    assert [len(split[s]) for s in ("train", "dev", "test")] == [6000, 1000, 1000]
    assert len(set().union(*split.values())) == 8000


def test_limit_keeps_first_images_of_each_split(tiny_dataset):
    dataset = load_dataset(tiny_dataset, limit=2)
    full = load_dataset(tiny_dataset)
    assert all(dataset.splits[s] == full.splits[s][:2] for s in full.splits)


def test_unknown_folder_names_what_was_looked_for(tmp_path):
    with pytest.raises(DatasetError, match="Flickr8k.token.txt.*captions.txt"):
        load_dataset(str(tmp_path))
    with pytest.raises(DatasetError, match="no such dataset folder"):
        load_dataset(str(tmp_path / "absent"))


@pytest.mark.parametrize("line, where", [("img.jpg no tab here", ":2:"), ("img.jpg\tno hash", ":2:"),
                                         ("img.jpg#x\tbad index", ":2:")])
def test_malformed_token_line_names_file_and_line(tmp_path, line, where):
    path = write(str(tmp_path / "t.txt"), f"ok.jpg#0\tfine caption\n{line}\n")
    with pytest.raises(DatasetError, match=where):
        parse_token_file(path)


def test_empty_caption_files_are_errors(tmp_path):
    with pytest.raises(DatasetError, match="no captions"):
        parse_token_file(write(str(tmp_path / "t.txt"), "\n\n"))
    with pytest.raises(DatasetError, match=":1: empty file"):
        parse_captions_csv(write(str(tmp_path / "c.txt"), ""))
    with pytest.raises(DatasetError, match="header but no captions"):
        parse_captions_csv(write(str(tmp_path / "c.txt"), "image,caption\n"))
    with pytest.raises(DatasetError, match=":1: expected the header"):
        parse_captions_csv(write(str(tmp_path / "c.txt"), "file,text\na.jpg,x\n"))
    with pytest.raises(DatasetError, match=":3: expected 'image,caption'"):
        parse_captions_csv(write(str(tmp_path / "c.txt"), "image,caption\na.jpg,x\na.jpg,x,y\n"))


@needs_shared
def test_real_official_token_file_and_its_quirk():
    captions = parse_token_file(os.path.join(SHARED_FLICKR, "Flickr8k_text", "Flickr8k.token.txt"))
    assert len(captions) == 8092 and sum(len(v) for v in captions.values()) == 40460
    dataset = load_dataset(SHARED_FLICKR)
    assert dataset.layout == "flickr8k"
    assert [len(dataset.splits[s]) for s in ("train", "dev", "test")] == [6000, 1000, 1000]
    assert "2258277193_586949ec62.jpg.1" not in set().union(*dataset.splits.values())
    # 8,092 keys: 8,000 in the splits, 91 real images in none, and the quirky key.
    assert dataset.skipped_captions["captioned image in no split"] == 92


@needs_shared
def test_real_kaggle_file_uses_official_splits_when_present(tmp_path):
    kaggle = tmp_path / "flickr8k_kaggle"
    kaggle.mkdir()
    os.symlink(os.path.join(SHARED_FLICKR, "captions.txt"), kaggle / "captions.txt")
    os.symlink(os.path.join(SHARED_FLICKR, "Flicker8k_Dataset"), kaggle / "Images")
    captions = parse_captions_csv(str(kaggle / "captions.txt"))
    assert len(captions) == 8091 and sum(len(v) for v in captions.values()) == 40455
    drawn = load_dataset(str(kaggle))
    assert drawn.layout == "kaggle" and [len(drawn.splits[s]) for s in ("train", "dev", "test")] == [6069, 1011, 1011]
    os.symlink(os.path.join(SHARED_FLICKR, "Flickr8k_text"), kaggle / "Flickr8k_text")
    official = load_dataset(str(kaggle))
    assert official.split_source == "official split files" and len(official.splits["dev"]) == 1000


def test_bundled_sample_is_what_its_script_writes(tmp_path):
    from PIL import Image
    import numpy as np

    from config import SAMPLE_DATA_DIR
    from make_sample import make_sample

    make_sample(str(tmp_path / "sample"))
    for name in ("Flickr8k.token.txt", "Flickr_8k.trainImages.txt", "Flickr_8k.devImages.txt", "Flickr_8k.testImages.txt"):
        shipped = open(os.path.join(SAMPLE_DATA_DIR, "Flickr8k_text", name)).read()
        assert open(tmp_path / "sample" / "Flickr8k_text" / name).read() == shipped, name
    images = sorted(os.listdir(os.path.join(SAMPLE_DATA_DIR, "Flicker8k_Dataset")))
    assert images == sorted(os.listdir(tmp_path / "sample" / "Flicker8k_Dataset")) and len(images) == 400
    for name in images[::50]:  # JPEG bytes may differ between Pillow versions; the pixels may not, much
        shipped = np.asarray(Image.open(os.path.join(SAMPLE_DATA_DIR, "Flicker8k_Dataset", name)), np.int16)
        regenerated = np.asarray(Image.open(tmp_path / "sample" / "Flicker8k_Dataset" / name), np.int16)
        assert np.abs(shipped - regenerated).max() <= 8, name


def karpathy_entry(filename, split, sentences, filepath=None):
    entry = {"filename": filename, "split": split, "imgid": 0,
             "sentences": [{"tokens": raw.lower().replace(".", "").split(), "raw": raw} for raw in sentences]}
    if filepath:
        entry["filepath"] = filepath
    return entry


def write_coco_like(root, image_size=(48, 32)):
    """A Karpathy `dataset_coco.json` whose images live in train2014/ and val2014/, as COCO's do."""
    from PIL import Image

    entries = [karpathy_entry(f"COCO_train2014_{i:012d}.jpg", "train", [f"A red bus number {i} .", "A bus."],
                              "train2014") for i in range(4)]
    entries += [karpathy_entry("COCO_val2014_000000000001.jpg", "restval", ["Two cats on a sofa."], "val2014"),
                karpathy_entry("COCO_val2014_000000000002.jpg", "val", ["A plate of food."], "val2014"),
                karpathy_entry("COCO_val2014_000000000003.jpg", "test", ["A man on a horse."], "val2014")]
    entries[-1]["sentences"].append({"tokens": ["a", "horse", "in", "a", "field"]})  # tokens only, no raw
    for entry in entries:
        folder = os.path.join(root, entry["filepath"])
        os.makedirs(folder, exist_ok=True)
        Image.new("RGB", image_size, (200, 30, 30)).save(os.path.join(folder, entry["filename"]))
    write(os.path.join(root, "dataset_coco.json"), json.dumps({"dataset": "coco", "images": entries}))
    return root


def test_karpathy_coco_file_gives_its_splits_and_folder_paths(tmp_path):
    dataset = load_dataset(write_coco_like(str(tmp_path / "coco")))
    assert dataset.layout == "karpathy" and dataset.split_source == "Karpathy split file dataset_coco.json"
    assert [len(dataset.splits[s]) for s in ("train", "dev", "test")] == [5, 1, 1]  # restval joins train
    assert dataset.splits["dev"] == ["val2014/COCO_val2014_000000000002.jpg"]
    assert dataset.captions["train2014/COCO_train2014_000000000003.jpg"] == ["a red bus number", "a bus"]
    assert dataset.captions["val2014/COCO_val2014_000000000003.jpg"] == ["a man on a horse", "a horse in a field"]
    assert os.path.isfile(dataset.image_path(dataset.splits["test"][0]))


def test_karpathy_flickr_file_with_image_folder_and_unknown_split(tmp_path):
    root = tmp_path / "flickr30k"
    (root / "flickr30k-images").mkdir(parents=True)
    entries = [karpathy_entry(f"{i}.jpg", split, [f"Dogs play {i}."])
               for i, split in enumerate(["train", "train", "val", "test", "extra"])]
    write(str(root / "dataset_flickr30k.json"), json.dumps({"dataset": "flickr30k", "images": entries}))
    dataset = load_dataset(str(root))
    assert dataset.image_dir == str(root / "flickr30k-images")
    assert dataset.splits == {"train": ["0.jpg", "1.jpg"], "dev": ["2.jpg"], "test": ["3.jpg"]}
    assert dataset.skipped_captions == {"image with unknown split 'extra'": 1}


@pytest.mark.parametrize("content, message", [
    ("{not json", "not valid JSON"), ('{"images": []}', "non-empty 'images' list"),
    ('{"images": [{"split": "train", "sentences": []}]}', r"images\[0\]: expected 'filename'"),
    ('{"images": [{"filename": "a.jpg", "split": "train", "sentences": [{"x": 1}]}]}', r"images\[0\] \(a.jpg\)"),
])
def test_bad_karpathy_file_is_one_clear_error(tmp_path, content, message):
    write(str(tmp_path / "d" / "dataset_coco.json"), content)
    with pytest.raises(DatasetError, match=message) as caught:
        load_dataset(str(tmp_path / "d"))
    assert "dataset_coco.json" in str(caught.value)


def test_flickr30k_token_file_with_drawn_split(tmp_path):
    root = tmp_path / "f30k"
    (root / "flickr30k-images").mkdir(parents=True)
    lines = [f"{1000 + i}.jpg#{k}\tA child plays in the water number {k} ." for i in range(16) for k in range(5)]
    write(str(root / "results_20130124.token"), "\n".join(lines) + "\n")
    dataset = load_dataset(str(root), split_seed=3)
    assert dataset.layout == "flickr30k" and "seed 3" in dataset.split_source
    assert [len(dataset.splits[s]) for s in ("train", "dev", "test")] == [12, 2, 2]
    assert dataset.captions["1003.jpg"][4] == "a child plays in the water number"


def test_preprocess_and_train_on_a_karpathy_coco_layout(tmp_path):
    from conftest import tiny_config
    from inputs.feature_store import open_features
    from train import train

    root = write_coco_like(str(tmp_path / "coco"))
    os.remove(os.path.join(root, "train2014", "COCO_train2014_000000000000.jpg"))  # a missing image is skipped
    run_dir = str(tmp_path / "run")
    train(tiny_config(root, run_dir, epochs=1, monitor="val_loss"))
    with open(os.path.join(run_dir, "metadata.json"), encoding="utf-8") as handle:
        metadata = json.load(handle)
    assert metadata["layout"] == "karpathy"
    assert metadata["images"]["train"] == {"in_split": 5, "with_features": 4}
    assert metadata["skipped_images"] == {"missing file": ["train2014/COCO_train2014_000000000000.jpg"]}
    _, rows = open_features(run_dir, metadata)
    assert "val2014/COCO_val2014_000000000003.jpg" in rows
    assert os.path.exists(os.path.join(run_dir, "model.keras"))


def windows_text(lines):
    """What a caption file saved on Windows holds: a UTF-8 byte-order mark and CRLF line ends."""
    return ("\ufeff" + "\r\n".join(lines) + "\r\n").encode("utf-8")


@pytest.mark.parametrize("layout", ["official", "kaggle", "karpathy"])
def test_caption_files_saved_on_windows_read_like_the_others(tmp_path, layout):
    names = [f"img{i}.jpg" for i in range(8)]
    root = tmp_path / layout
    (root / "Images").mkdir(parents=True)
    if layout == "official":
        text = root / "Flickr8k_text"
        text.mkdir()
        (text / "Flickr8k.token.txt").write_bytes(windows_text([f"{n}#0\tA dog number {i} ." for i, n in enumerate(names)]))
        for split, chosen in (("train", names[:6]), ("dev", names[6:7]), ("test", names[7:])):
            (text / f"Flickr_8k.{split}Images.txt").write_bytes(windows_text(chosen))
    elif layout == "kaggle":
        (root / "captions.txt").write_bytes(windows_text(["image,caption"] + [f"{n},A dog number {i} ." for i, n in
                                                                              enumerate(names)]))
    else:
        entries = [{"filename": n, "split": "train" if i < 6 else "val" if i < 7 else "test",
                    "sentences": [{"raw": f"A dog number {i} ."}]} for i, n in enumerate(names)]
        (root / "dataset_flickr8k.json").write_bytes(windows_text([json.dumps({"images": entries})]))
    dataset = load_dataset(str(root))
    assert sorted(dataset.captions) == names  # the first image's name carries no byte-order mark
    assert dataset.captions["img0.jpg"] == ["a dog number"]
    if layout != "kaggle":
        assert dataset.splits["train"] == names[:6] and dataset.splits["dev"] == ["img6.jpg"]


def table_dataset(tmp_path, name, content: bytes):
    images = tmp_path / "pictures"
    images.mkdir(exist_ok=True)
    path = tmp_path / name
    path.write_bytes(content)
    return str(path), str(images)


@pytest.mark.parametrize("name, lines", [
    ("pairs.csv", ["filename,caption,split"] + [f'p{i}.jpg,"A cat, number {i}",{"train" if i < 6 else "val"}'
                                                 for i in range(8)]),
    ("pairs.tsv", ["Image\tText\tSplit"] + [f"p{i}.jpg\tA cat number {i}\t{'train' if i < 6 else 'dev'}"
                                           for i in range(8)]),
    ("pairs.jsonl", [json.dumps({"file": f"p{i}.jpg", "comment": f"A cat number {i}",
                                 "split": "train" if i < 6 else "validation"}) for i in range(8)]),
])
@pytest.mark.parametrize("windows", [False, True])
def test_own_caption_table_in_each_format_with_its_split_column(tmp_path, name, lines, windows):
    content = windows_text(lines) if windows else ("\n".join(lines) + "\n").encode("utf-8")
    path, images = table_dataset(tmp_path, name, content)
    dataset = load_dataset("", captions_file=path, images_dir=images)
    assert dataset.layout == "table" and dataset.name == "pairs" and dataset.image_dir == images
    assert dataset.splits["train"] == [f"p{i}.jpg" for i in range(6)] and dataset.splits["dev"] == ["p6.jpg", "p7.jpg"]
    assert dataset.captions["p0.jpg"] == ["a cat number"]


def test_own_caption_table_without_split_column_gets_the_seeded_split(tmp_path):
    lines = ["image,caption"] + [f"p{i}.jpg,A cat {i % 3}" for i in range(40)] + ["p0.jpg,a second caption"]
    path, images = table_dataset(tmp_path, "mine.csv", ("\n".join(lines) + "\n").encode("utf-8"))
    dataset = load_dataset("", split_seed=5, captions_file=path, images_dir=images)
    assert {k: len(v) for k, v in dataset.splits.items()} == {"train": 30, "dev": 5, "test": 5}
    assert dataset.captions["p0.jpg"] == ["a cat", "a second caption"]
    assert "seed 5" in dataset.split_source


@pytest.mark.parametrize("content, message", [
    (b"", ":1: empty file; expected a header"),
    (b"\xef\xbb\xbf\r\n", ":1: empty file; expected a header"),
    (b"image,caption\n", ": a header but no rows"),
    (b"picture,caption\na.jpg,x\n", ":1: no image column (expected one of image, image_name, filename, file)"),
    (b"image,words\na.jpg,x\n", ":1: no caption column (expected one of caption, text, comment)"),
    (b"image,caption\na.jpg,a dog\nb.jpg,\n", ":3: no caption for b.jpg"),
    (b"image,caption\r\na.jpg,a dog\r\n,a cat\r\n", ":3: no image name"),
    (b"image,caption,split\na.jpg,a dog,holdout\n", ":2: split 'holdout' of a.jpg: expected train, dev (or val) or test"),
    (b'{"image": "a.jpg", "caption": "a dog"}\n{"image": "b.jpg"\n', ":2: not a JSON object"),
    (b'{"image": "a.jpg", "caption": "a dog"}\n{"image": "b.jpg"}\n', ":2: no caption for b.jpg"),
])
def test_bad_caption_tables_name_the_file_and_line(tmp_path, content, message):
    path, images = table_dataset(tmp_path, "bad.txt", content)
    with pytest.raises(DatasetError) as error:
        load_dataset("", captions_file=path, images_dir=images)
    assert str(error.value).startswith(path + message)


def test_caption_table_needs_its_image_folder(tmp_path):
    path, _ = table_dataset(tmp_path, "pairs.csv", b"image,caption\na.jpg,a dog\n")
    with pytest.raises(DatasetError, match="give --images_dir"):
        load_dataset("", captions_file=path)
    with pytest.raises(DatasetError, match="no such image folder"):
        load_dataset("", captions_file=path, images_dir=str(tmp_path / "absent"))
    with pytest.raises(DatasetError, match="no such captions file"):
        load_dataset("", captions_file=str(tmp_path / "absent.csv"), images_dir=str(tmp_path))
    assert load_dataset("", captions_file=path, need_images=False).captions == {"a.jpg": ["a dog"]}
