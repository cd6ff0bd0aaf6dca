"""Stage 3: caption images with a trained run, or with the pretrained captioner that ships with the project.

    python predict.py --image_path photo.jpg                      # the pretrained captioner (pretrained/), offline
    python predict.py --image_path photo.jpg --run_dir runs/sample   # a run you trained
    python predict.py --image_path a.jpg b.jpg folder/ --output captions.json
    python predict.py --image_path photo.jpg --beam_size 5 --top 3
    python predict.py --image_path photo.jpg --run_dir runs/attention --attention_map photo_attention.png
    python predict.py --image_path photo.jpg --run_dir runs/a runs/b runs/c      # an ensemble of three runs
    python predict.py --image_path photo.jpg --guide none         # plain decoding, without the ImageNet tags

Without --run_dir (and --data_dir) the pretrained package captions; its encoder check compares the
encoder loaded with the one its decoder was trained with and warns when they differ.
Captions are guided by the encoder's ImageNet tags (docs/guided_decoding.md) unless --guide none.
One image: prints its caption, then its tags. Several files or a folder: one
`path<TAB>caption<TAB>tags` line each.
`--top N`: the N best beams of each image, with their log-probabilities.
"""
from __future__ import annotations

import json
import os
import sys
from typing import List

from config import DECODING_FLAGS, Config, parse_config, quiet_tensorflow, run_script

quiet_tensorflow()

from inputs.images import IMAGE_SUFFIXES  # noqa: E402
from serving.captioner import Captioner  # noqa: E402
from serving.encoder_check import check_encoder, warn_if_untrained  # noqa: E402

PREDICT_FLAGS = ("image_path", "data_dir", "run_dir", "weights") + DECODING_FLAGS + ("top", "output", "attention_map")


def expand_paths(arguments: List[str]) -> tuple[List[str], bool]:
    """Files as given, folders as their image files (sorted); and whether any folder was given."""
    paths, any_folder = [], False
    for argument in arguments:
        if os.path.isdir(argument):
            any_folder = True
            paths += sorted(os.path.join(argument, name) for name in os.listdir(argument)
                            if name.lower().endswith(IMAGE_SUFFIXES))
        else:
            paths.append(argument)
    return paths, any_folder


def attention_map_path(target: str, image_path: str, single: bool, taken: List[str]) -> str:
    """`target` itself for one image; else OUT_<image name>.png, or OUT_<image name>_2.png, ... when
    an image of the same name from another folder already took that file."""
    if single:
        return target
    root, extension = os.path.splitext(target)
    root, extension = f"{root}_{os.path.splitext(os.path.basename(image_path))[0]}", extension or ".png"
    path, copy = root + extension, 1
    while path in taken:
        copy += 1
        path = f"{root}_{copy}{extension}"
    return path


def write_attention_maps(captioner: Captioner, captions: dict, features: dict, target: str,
                         single: bool) -> List[str]:
    """Draws the attention behind each image's shown caption (the best beam with --top); returns the files."""
    written = []
    for path, caption in captions.items():
        text = caption if isinstance(caption, str) else caption[0][0]
        out = attention_map_path(target, path, single, written)
        captioner.attention_picture(path, features[path], text).save(out)
        written.append(out)
    return written


def print_captions(captions: dict, guidance: dict, single: bool, top: int) -> None:
    """One image: its caption (with --top, its best beams), then its tags when guidance is on. Several:
    a `path<TAB>caption[<TAB>tags]` line each (with --top, the path, then its beams)."""
    for path, caption in captions.items():
        tags = guidance[path].describe() if path in guidance else ""
        if top > 1:
            if not single:
                print(path)
            for rank, (text, log_probability) in enumerate(caption, 1):
                print(f"{rank}. {text}\t(log-probability {log_probability:.3f})")
            if tags:
                print(tags + (f": {guidance[path].caption}" if guidance[path].guided else ""))
        elif single:
            print(caption + (f"\n{tags}" if tags else ""))
        else:
            print(f"{path}\t{caption}" + (f"\t{tags}" if tags else ""))


def write_output(config: Config, captioner: Captioner, captions: dict, guidance: dict, errors: list,
                 agreement) -> None:
    """--output: the captions (and beams, tags) as JSON."""
    if config.top > 1:
        captions = {path: [{"caption": text, "log_probability": log_probability} for text, log_probability in beams]
                    for path, beams in captions.items()}
    result = {"run_dir": captioner.run_dir if len(captioner.run_dirs) == 1 else captioner.run_dirs,
              "encoder": captioner.metadata["encoder"], "weights": captioner.weights, "encoder_agreement": agreement,
              "decoding": captioner.decoding(), "captions": captions,
              "skipped": {str(error).split(":")[0]: error.kind for error in errors}}
    if guidance:
        result["tags"] = {path: entry.as_dict() for path, entry in guidance.items()}
    with open(config.output, "w", encoding="utf-8") as handle:
        json.dump(result, handle, indent=1)


def predict(config: Config) -> dict:
    if not config.image_path:
        raise ValueError("--image_path: give an image file, several files, or a folder")
    paths, any_folder = expand_paths(config.image_path)
    if not paths:
        raise ValueError(f"--image_path {' '.join(config.image_path)}: no image files found")
    if config.top < 1:
        raise ValueError(f"--top must be at least 1, got {config.top}")
    captioner = Captioner.from_config(config, package_by_default=True)
    print(f"{captioner.describe()}; decoding: {captioner.decoding()}", file=sys.stderr)
    warn_if_untrained(captioner)
    agreement = check_encoder(captioner)
    if config.attention_map and not captioner.has_attention:
        raise ValueError("--attention_map draws one decoder's attention, not an ensemble's: give one --run_dir "
                         "of one decoder" if len(captioner.models) > 1 else
                         f"--attention_map: {captioner.run_dir} has a merge decoder, which does not attend to "
                         f"image regions; train one with --decoder attention")
    captions, features, errors, guidance = captioner.caption_files(paths, config.decode_batch_size, config.top)
    single = len(paths) == 1 and not any_folder
    if single and errors:
        raise ValueError(str(errors[0]))
    for error in errors:
        print(f"skipped {error}", file=sys.stderr)
    print_captions(captions, guidance, single, config.top)
    if errors and not single:
        print(f"{len(errors)} of {len(paths)} images skipped", file=sys.stderr)
    if config.output:
        write_output(config, captioner, captions, guidance, errors, agreement)
    if config.attention_map and captions:
        for path in write_attention_maps(captioner, captions, features, config.attention_map, single):
            print(f"attention map: {path}", file=sys.stderr)
    # Files named one by one must all work; a folder's bad files are skipped and counted.
    return 1 if errors and not any_folder else 0


def main(argv: list[str] | None = None) -> int:
    return predict(parse_config(PREDICT_FLAGS, __doc__.splitlines()[0], argv, several=("run_dir",)))


if __name__ == "__main__":
    run_script(main)
