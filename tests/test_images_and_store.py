import os

import numpy as np
import pytest
from PIL import Image

from inputs.images import ImageError, load_image
from inputs.feature_store import FeatureStore


def make_images(folder) -> dict:
    """One file per kind of awkward input; returns kind -> path."""
    folder.mkdir(exist_ok=True)
    paths = {}
    def save(name, image, **options):
        path = str(folder / name)
        image.save(path, **options)
        paths[name.split(".")[0]] = path
    save("rgb.jpg", Image.new("RGB", (50, 40), (200, 10, 10)))
    save("grayscale.jpg", Image.new("L", (30, 30), 128))
    save("rgba.png", Image.new("RGBA", (30, 30), (0, 0, 255, 0)))
    save("cmyk.jpg", Image.new("CMYK", (30, 30), (0, 255, 255, 0)))
    save("palette.gif", Image.new("P", (30, 30), 3))
    save("huge.jpg", Image.new("RGB", (5000, 4000), (10, 200, 10)), quality=50)
    save("bomb.png", Image.new("1", (11000, 10000), 0))
    jpeg = open(paths["rgb"], "rb").read()
    (folder / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "text.jpg").write_text("this is not an image")
    for kind in ("truncated", "empty", "text"):
        paths[kind] = str(folder / f"{kind}.jpg")
    paths["missing"] = str(folder / "missing.jpg")
    return paths


def test_convertible_images_become_rgb_of_the_right_size(tmp_path):
    paths = make_images(tmp_path / "images")
    pixels, note = load_image(paths["rgb"], 64)
    assert pixels.shape == (64, 64, 3) and pixels.dtype == np.float32 and note is None
    assert abs(pixels[..., 0].mean() - 200) < 3
    expected = {"grayscale": "grayscale converted to RGB", "rgba": "transparency put on white",
                "cmyk": "CMYK converted to RGB", "palette": "palette converted to RGB",
                "huge": "huge image downscaled"}
    for kind, message in expected.items():
        pixels, note = load_image(paths[kind], 64)
        assert pixels.shape == (64, 64, 3), kind
        assert note == message, kind
    # A fully transparent pixel shows the white background.
    assert load_image(paths["rgba"], 8)[0].min() == 255


@pytest.mark.parametrize("kind, message", [("truncated", "corrupt or truncated image"), ("empty", "empty file"),
                                           ("text", "not an image"), ("missing", "missing file"),
                                           ("bomb", "image too large")])
def test_unusable_images_raise_a_named_error(tmp_path, kind, message):
    paths = make_images(tmp_path / "images")
    with pytest.raises(ImageError) as caught:
        load_image(paths[kind], 64)
    assert caught.value.kind == message
    assert paths[kind] in str(caught.value)


def test_store_appends_and_reopens(tmp_path):
    store = FeatureStore(str(tmp_path), "f", 3, identity={"encoder": "x"})
    store.append(["a", "b"], np.arange(6, dtype=np.float32).reshape(2, 3))
    store.append(["c"], np.full((1, 3), 9, np.float32))
    again = FeatureStore(str(tmp_path), "f", 3, identity={"encoder": "x"})
    assert again.names == ["a", "b", "c"] and "b" in again and "z" not in again
    np.testing.assert_array_equal(again.matrix()[again.rows["c"]], [9, 9, 9])
    with pytest.raises(ValueError, match=r"features of shape \(3,\)"):
        again.append(["d"], np.zeros((1, 4), np.float32))


def test_store_recovers_from_a_write_cut_short(tmp_path):
    store = FeatureStore(str(tmp_path), "f", 2)
    store.append(["a", "b"], np.array([[1, 2], [3, 4]], np.float32))
    # A crash mid-batch: row c whole and named, row d half written, its name cut before the newline.
    with open(store.rows_path, "ab") as handle:
        handle.write(np.array([[5, 6], [7, 8]], np.float32).tobytes()[:12])
    with open(store.index_path, "a") as handle:
        handle.write("c\nd")
    recovered = FeatureStore(str(tmp_path), "f", 2)
    assert recovered.names == ["a", "b", "c"]
    assert os.path.getsize(recovered.rows_path) == 3 * 2 * 4
    recovered.append(["d"], np.array([[7, 8]], np.float32))
    np.testing.assert_array_equal(FeatureStore(str(tmp_path), "f", 2).matrix(), [[1, 2], [3, 4], [5, 6], [7, 8]])
    # Names written but rows missing (rows are flushed first, so only by outside damage): cut to the rows.
    with open(recovered.index_path, "a") as handle:
        handle.write("e\n")
    assert FeatureStore(str(tmp_path), "f", 2).names == ["a", "b", "c", "d"]


def test_store_made_by_another_encoder_is_replaced(tmp_path):
    FeatureStore(str(tmp_path), "f", 2, identity={"weights": "none"}).append(["a"], np.ones((1, 2), np.float32))
    other = FeatureStore(str(tmp_path), "f", 2, identity={"weights": "imagenet"})
    assert other.replaced and len(other) == 0


def test_feature_rows_read_on_demand_index_like_numpy(tmp_path):
    from inputs.feature_store import open_features

    maps = np.random.default_rng(0).standard_normal((20, 3, 2)).astype(np.float16)
    store = FeatureStore(str(tmp_path), "f", (3, 2), "float16", identity={"encoder": "x"})
    store.append([f"img{i}" for i in range(20)], maps)
    metadata = {"feature_dim": 2, "feature_shape": [3, 2],
                "feature_store": {"name": "f", "dtype": "float16", "identity": {"encoder": "x"}}}
    rows, names = open_features(str(tmp_path), metadata)
    assert rows.shape == (20, 3, 2) and rows.dtype == np.float16 and names["img7"] == 7
    for index in ([5, 3, 4, 19, 0, 3], [], np.array([2, 2, 1]), slice(10, 14), 7, -1):
        np.testing.assert_array_equal(rows[index], maps[index])
    np.testing.assert_array_equal(np.asarray(rows), maps)
    with pytest.raises(IndexError, match="20 rows"):
        rows[[20]]


@pytest.mark.parametrize("encoder", ["vgg16", "xception", "inception_v3", "mobilenet_v2"])
def test_spatial_encoders_give_the_map_shape_in_the_table(encoder):
    from inputs.encoders import ENCODERS, build_encoder, encode_pixels

    spec = ENCODERS[encoder]
    model = build_encoder(encoder, "none", seed=1, features="spatial")
    pixels = np.random.default_rng(0).uniform(0, 255, (1, spec.input_size, spec.input_size, 3)).astype(np.float32)
    assert encode_pixels(model, pixels).shape == (1, *spec.spatial_shape)


def test_a_photo_with_an_exif_orientation_is_read_upright(tmp_path):
    """A phone's portrait photo: sideways pixels and EXIF orientation 6 (turn 90 degrees clockwise)."""
    from PIL import Image

    from inputs import encoders, images

    rng = np.random.default_rng(0)
    upright = Image.fromarray(rng.integers(0, 255, (64, 48, 3), dtype=np.uint8))  # 48 wide, 64 tall
    sideways = upright.transpose(Image.Transpose.ROTATE_90)  # what the sensor stored
    exif = Image.Exif()
    exif[0x0112] = 6
    rotated_path = str(tmp_path / "portrait.jpg")
    sideways.save(rotated_path, quality=95, exif=exif)
    # The same pixels as stored in that JPEG, turned upright here and kept losslessly.
    with Image.open(rotated_path) as stored:
        stored_pixels = np.asarray(stored.convert("RGB"))
    upright_path = str(tmp_path / "upright.png")
    Image.fromarray(np.rot90(stored_pixels, k=-1).copy()).save(upright_path)
    pixels, note = images.load_image(rotated_path, 224)
    expected, _ = images.load_image(upright_path, 224)
    np.testing.assert_array_equal(pixels, expected)
    assert "turned upright (EXIF orientation 6)" in note
    model = encoders.build_encoder("mobilenet_v2", "none")
    np.testing.assert_allclose(encoders.encode_pixels(model, pixels[None]), encoders.encode_pixels(model, expected[None]))
    # Read as stored, the photo would be another picture: the turn is what makes them equal.
    as_stored = np.asarray(Image.fromarray(stored_pixels).resize((224, 224), Image.BILINEAR), np.float32)
    assert np.abs(as_stored - expected).mean() > 20
