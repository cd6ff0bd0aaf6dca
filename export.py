"""Stage 6: export a run (or the pretrained package) to one self-contained model file for serving.

    python export.py --run_dir runs/flickr8k --format saved_model --output exported/captioner
    python export.py --format saved_model --output exported/captioner   # the pretrained package
    python export.py --run_dir runs/flickr8k --format tflite --output captioner.tflite [--quantize]

saved_model: a TensorFlow SavedModel in OUTPUT/<--export_version>/, the layout TensorFlow Serving
reads. Its `serving_default` signature takes a batch of encoded images (JPEG, PNG, GIF, BMP; any
size) and returns `captions` and their `log_probabilities`, decoded with the run's --beam_size;
`image_features` returns the features the decoder reads. Decoding, EXIF orientation, transparency and
resizing happen inside, as predict.py does them, so the model needs nothing from this repository.
Guided by ImageNet tags (--guide, by default as predict.py), it carries the encoder's ImageNet
classifier and the constrained beam search too, and also returns each image's `tags`,
`tag_probabilities` and whether its caption was `guided`.

tflite: a LiteRT (TensorFlow Lite) model for phones, with builtin operations only: one image as
uint8 RGB pixels already resized to the encoder's square input (224 x 224 for MobileNetV2), greedy
decoding inside; outputs `token_ids` and `words` (the caption's words, then empty strings); never
guided (its builtin operations cannot run the guided search: --guide tags is refused).
--quantize stores its weights in 8 bits (dynamic-range quantisation).
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import sys
import tempfile

from config import DECODING_FLAGS, Config, parse_config, quiet_tensorflow, run_script

quiet_tensorflow()

import tensorflow as tf  # noqa: E402

from serving.captioner import Captioner  # noqa: E402
from serving.encoder_check import check_encoder, warn_if_untrained  # noqa: E402
from serving.loading import folder_size  # noqa: E402
from inputs.encoders import ENCODERS  # noqa: E402
from serving.graph_images import batch_pixels  # noqa: E402
from tagging.guidance import guide_in_graph  # noqa: E402
from inputs.vocabulary import END_ID, SPECIAL_TOKENS, UNK_ID  # noqa: E402

EXPORT_FLAGS = ("run_dir", "data_dir", "weights", "format", "output", "export_version", "quantize") + DECODING_FLAGS


def caption_words(token_ids: tf.Tensor, tokens: list) -> tf.Tensor:
    """(batch, steps) token ids -> (batch, steps) words: the caption's words in order, then '' (what
    Vocabulary.decode keeps: everything before the first <end>, without the special tokens)."""
    after_end = tf.cumsum(tf.cast(tf.equal(token_ids, END_ID), tf.int32), axis=1) > 0
    is_word = (token_ids >= len(SPECIAL_TOKENS)) | tf.equal(token_ids, UNK_ID)
    table = tf.constant([""] * len(SPECIAL_TOKENS) + list(tokens[len(SPECIAL_TOKENS):]))
    # Only integer selection before the lookup: LiteRT's builtin GATHER reads strings, SELECT does not.
    return tf.gather(table, tf.where(is_word & ~after_end, token_ids, 0))


def caption_strings(token_ids: tf.Tensor, tokens: list) -> tf.Tensor:
    words = caption_words(token_ids, tokens)
    return tf.strings.reduce_join(tf.ragged.boolean_mask(words, tf.not_equal(words, "")), axis=1, separator=" ")


def check_output(config: Config) -> str:
    """The path the export will create; one line when it exists or cannot be created."""
    if not config.output:
        raise ValueError("--output: give where the exported model goes (a folder for saved_model, a file for tflite)")
    target = (os.path.join(config.output, str(config.export_version)) if config.format == "saved_model"
              else config.output)
    if config.export_version < 1:
        raise ValueError(f"--export_version must be 1 or more (TensorFlow Serving's version folders), got "
                         f"{config.export_version}")
    if os.path.exists(target):
        raise ValueError(f"--output: {target} already exists; remove it, or choose another path"
                         + (" or --export_version" if config.format == "saved_model" else ""))
    existing = os.path.dirname(os.path.abspath(target))
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing) or not os.access(existing, os.W_OK):
        raise ValueError(f"--output: cannot write into {existing}")
    return target  # its folder is created only when the model is ready to be written


def features_function(captioner: Captioner):
    """Pixels (0-255) -> the features predict.py gives the decoder, rounded to the run's store precision
    (float16 for spatial features) as Captioner.image_features rounds them."""
    encoder, precision = captioner.encoder(), captioner.metadata["feature_store"]["dtype"]

    def image_features(pixels):
        features = encoder(tf.cast(pixels, tf.float32), training=False)
        return tf.cast(tf.cast(features, precision), tf.float32)

    return image_features


def module_with_weights(captioner: Captioner) -> tf.Module:
    module = tf.Module()
    # The TensorFlow variables under the Keras ones, listed once each: tracking the Keras models
    # themselves stores every weight twice.
    module.weights = [weight.value for model in [captioner.encoder(), *captioner.models] for weight in model.weights]
    return module


def guided_outputs(captioner: Captioner, features, token_ids, log_probabilities) -> dict:
    """What `Captioner.captions_and_guidance` does, in the graph: tagging/guidance.py's one definition."""
    out = guide_in_graph(captioner.policy, captioner.search, features, token_ids, log_probabilities,
                         captioner.beam_size, captioner.length_penalty)
    labels = tf.constant([label.replace("_", " ") for label in captioner.policy.labels])
    return {"token_ids": out["token_ids"], "log_probabilities": out["log_probabilities"], "guided": out["guided"],
            "tags": tf.gather(labels, out["tag_classes"]), "tag_probabilities": out["tag_probabilities"]}


def write_saved_model(captioner: Captioner, target: str) -> None:
    size = ENCODERS[captioner.metadata["encoder"]].input_size
    encode, decoder, tokens = features_function(captioner), captioner.decoder, captioner.vocabulary.tokens
    beam_size, length_penalty = captioner.beam_size, captioner.length_penalty

    def serve(images):
        features = encode(batch_pixels(images, size))
        token_ids, log_probabilities = decoder.best_in_graph(features, beam_size, length_penalty)
        if captioner.policy is None:
            return {"captions": caption_strings(token_ids, tokens), "log_probabilities": log_probabilities}
        outputs = guided_outputs(captioner, features, token_ids, log_probabilities)
        return {"captions": caption_strings(outputs.pop("token_ids"), tokens), **outputs}

    def image_features(images):
        return {"image_features": encode(batch_pixels(images, size))}

    module = module_with_weights(captioner)
    images = tf.TensorSpec([None], tf.string, name="images")
    module.serve = tf.function(serve, input_signature=[images])
    module.image_features = tf.function(image_features, input_signature=[images])
    # Written beside the target and renamed when complete: an interrupted export leaves no version folder.
    partial = tempfile.mkdtemp(prefix=f".{os.path.basename(target)}.", dir=os.path.dirname(os.path.abspath(target)))
    try:
        tf.saved_model.save(module, partial, signatures={"serving_default": module.serve,
                                                           "image_features": module.image_features})
        os.chmod(partial, 0o755)  # mkdtemp's folder is private; a serving container may run as another user
        os.replace(partial, target)
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def tflite_bytes(captioner: Captioner, quantize: bool) -> bytes:
    size = ENCODERS[captioner.metadata["encoder"]].input_size
    encode, decoder, tokens = features_function(captioner), captioner.decoder, captioner.vocabulary.tokens

    @tf.function(input_signature=[tf.TensorSpec([1, size, size, 3], tf.uint8, name="pixels")])
    def caption(pixels):
        token_ids, _ = decoder.best_in_graph(encode(pixels), 1)
        return {"token_ids": token_ids[0], "words": caption_words(token_ids, tokens)[0]}

    # Through a SavedModel, so that the LiteRT model keeps the signature (named inputs and outputs).
    module = module_with_weights(captioner)
    module.caption = caption
    with tempfile.TemporaryDirectory() as folder:
        tf.saved_model.save(module, folder, signatures={"serving_default": caption})
        converter = tf.lite.TFLiteConverter.from_saved_model(folder)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]  # what a phone's runtime has
        if quantize:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        return converter.convert()


def write_file(data: bytes, target: str) -> None:
    handle, partial = tempfile.mkstemp(prefix=f".{os.path.basename(target)}.", dir=os.path.dirname(os.path.abspath(target)))
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.chmod(partial, 0o644)  # mkstemp's file is private
        os.replace(partial, target)
    finally:
        if os.path.exists(partial):
            os.remove(partial)


def export(config: Config) -> str:
    if config.format not in ("saved_model", "tflite"):
        raise ValueError(f"--format {config.format}: choose saved_model or tflite")
    target = check_output(config)
    if config.format == "tflite" and (config.beam_size != 1 or config.no_repeat_ngram_size or config.block_bad_endings):
        raise ValueError("--format tflite decodes greedily with the plain rules: drop --beam_size, "
                         "--no_repeat_ngram_size and --block_bad_endings (or export a saved_model)")
    if config.format == "tflite" and config.guide == "tags":
        raise ValueError("--guide tags: --format tflite decodes greedily with LiteRT's builtin operations, and "
                         "guided decoding needs the constrained beam search; export a saved_model, which carries "
                         "it, or leave out --guide")
    if config.guide == "auto":  # guided where the format can run it, as predict.py is by default
        config = dataclasses.replace(config, guide="none" if config.format == "tflite" else Config().guide)
    captioner = Captioner.from_config(config, package_by_default=True)
    print(f"exporting {captioner.run_dir if len(captioner.run_dirs) == 1 else captioner.run_dirs}: "
          f"{captioner.describe()}; decoding: {'greedy' if config.format == 'tflite' else captioner.decoding()}",
          file=sys.stderr)
    warn_if_untrained(captioner)
    check_encoder(captioner)
    os.makedirs(os.path.dirname(os.path.abspath(target)), exist_ok=True)
    if config.format == "saved_model":
        write_saved_model(captioner, target)
    else:
        write_file(tflite_bytes(captioner, config.quantize), target)
    print(f"{target}: {folder_size(target) / 1e6:.1f} MB", file=sys.stderr)
    return target


def main(argv: list[str] | None = None) -> int:
    # --guide's default here is "auto": a saved_model is guided like predict.py's captions, a tflite model
    # (greedy, builtin operations only) is not.
    export(parse_config(EXPORT_FLAGS, __doc__.splitlines()[0], argv, several=("run_dir",), guide="auto"))
    return 0


if __name__ == "__main__":
    run_script(main)
