"""Stages `decode` and `attention` of benchmarks/benchmark.py: batched greedy and beam decoding beside per-word
loops, and the attention decoder beside the merge decoder."""
from __future__ import annotations

import os

import numpy as np

from bench_common import (MOBILENET_NOTOP, PROJECT, SHARED_IMAGES, fit_one_epoch, header, row, timed,
                          training_data)


def bench_decoding(images: int, loop_images: int, beam_loop_images: int, vocabulary_size: int, max_length: int):
    import keras
    from config import Config
    from decoders.decoding import CaptionDecoder
    from inputs.encoders import build_encoder, encode_pixels
    from inputs.images import load_image
    from model import build_merge_model
    from tutorial_baselines import beam_per_word, greedy_per_word, predict_with

    keras.utils.set_random_seed(0)
    model = build_merge_model(Config(), vocabulary_size, 1280)
    features = np.random.default_rng(2).standard_normal((images, 1280), dtype=np.float32)
    decoder = CaptionDecoder(model, max_length)
    decoder.greedy(features[:8])
    decoder.beam_search(features[:8], 3)
    predict = predict_with(model)
    greedy_per_word(predict, features[0], 2)
    header(f"Decoding: merge model (vocabulary {vocabulary_size}, untrained: every caption runs to "
           f"{max_length} words plus <end>, on both sides), 1280-d features")
    seconds, loop_tokens = timed(lambda: [greedy_per_word(predict, f, max_length) for f in features[:loop_images]])
    loop = row("greedy, per-word model.predict loop", loop_images, seconds, "images")
    seconds, batched = timed(decoder.greedy, features)
    row("greedy, ours: batched, compiled, LSTM state carried", images, seconds, "images", loop)
    same = all([int(t) for t in batched[i][:len(loop_tokens[i])]] == loop_tokens[i] for i in range(loop_images))
    print(f"  {'    same captions as the loop on the images both decoded':52s} {same}")
    seconds, _ = timed(lambda: [beam_per_word(predict, f, max_length, 3) for f in features[:beam_loop_images]])
    loop = row("beam 3, per-word per-beam model.predict loop", beam_loop_images, seconds, "images")
    seconds, _ = timed(decoder.beam_search, features, 3)
    row("beam 3, ours: batched, compiled", images, seconds, "images", loop)

    weights = MOBILENET_NOTOP if os.path.exists(MOBILENET_NOTOP) else "none"
    encoder = build_encoder("mobilenet_v2", weights)
    folder = SHARED_IMAGES if os.path.isdir(SHARED_IMAGES) else os.path.join(PROJECT, "data", "sample", "Flicker8k_Dataset")
    path = os.path.join(folder, sorted(os.listdir(folder))[0])
    encode_pixels(encoder, load_image(path, 224)[0][None])
    repeats = 10
    encode_seconds, one = timed(lambda: [encode_pixels(encoder, load_image(path, 224)[0][None]) for _ in range(repeats)])
    one = np.random.default_rng(3).standard_normal((1, 1280), dtype=np.float32)
    decoder.greedy(one)
    greedy_seconds, _ = timed(lambda: [decoder.greedy(one) for _ in range(repeats)])
    beam_seconds, _ = timed(lambda: [decoder.beam_search(one, 3) for _ in range(repeats)])
    print(f"  one image in predict.py, after loading (mean of {repeats}): load + encode {1000 * encode_seconds / repeats:.0f} ms, "
          f"greedy decode {1000 * greedy_seconds / repeats:.0f} ms, beam-3 decode {1000 * beam_seconds / repeats:.0f} ms")


def bench_attention(image_count: int, decode_images: int, beam_loop_images: int, work_dir: str):
    """Both decoders on the same captions: merge on pooled 1280-d vectors, attention on 7x7x1280 maps
    (MobileNetV2's shapes; features synthetic, the float16 spatial map read from a memory map as in training)."""
    import keras
    from config import Config
    from decoders.decoding import CaptionDecoder
    from model import build_model, compile_model
    from tutorial_baselines import beam_per_word

    import warnings

    warnings.filterwarnings("ignore", message=".*shuffle=True.*was passed")  # our pipeline shuffles itself
    rng, vocabulary, length, rows, tokens = training_data(image_count, 1280)
    spatial_path = os.path.join(work_dir, "synthetic_spatial.f16")
    maps = np.memmap(spatial_path, np.float16, "w+", shape=(image_count, 49, 1280))
    maps[:] = rng.uniform(0, 6, (image_count, 49, 1280)).astype(np.float16)
    maps.flush()
    spatial = np.memmap(spatial_path, np.float16, "r", shape=(image_count, 49, 1280))
    pooled = np.asarray(spatial, np.float32).mean(axis=1)
    header(f"Attention decoder beside the merge decoder: {len(rows)} real Flickr8k captions, batch 32, "
           f"vocabulary {len(vocabulary)}, default sizes (256); synthetic MobileNetV2-shaped features")
    models, rates = {}, {}
    for decoder, features in (("merge", pooled), ("attention", spatial)):
        config = Config(decoder=decoder)
        keras.utils.set_random_seed(0)
        model = build_model(config, len(vocabulary), features.shape[1:])
        compile_model(model, config.learning_rate)
        seconds = fit_one_epoch(model, features, rows, tokens, config.batch_size)
        models[decoder] = model
        rates[decoder] = row(f"training, {decoder} decoder (ratio: to merge)", len(rows), seconds, "captions",
                             rates.get("merge"))
    features = np.asarray(spatial[:decode_images], np.float32)
    decoder = CaptionDecoder(models["attention"], length)
    decoder.beam_search(features[:8], 3)
    decoder.greedy(features[:8])
    call = lambda inputs: models["attention"](inputs, training=False)  # noqa: E731
    beam_per_word(call, features[0], 2, 3)
    seconds, looped = timed(lambda: [beam_per_word(call, f, length, 3) for f in features[:beam_loop_images]])
    loop = row("beam 3, attention, per-word per-beam model call loop", beam_loop_images, seconds, "images")
    seconds, beams = timed(decoder.beam_search, features, 3)
    row("beam 3, attention, ours: batched, compiled", decode_images, seconds, "images", loop)
    same = all([h.token_ids for h in beams[i]] == [t for t, _ in looped[i]] for i in range(beam_loop_images))
    print(f"  {'    same beams as the loop on the images both decoded':52s} {same}")
    seconds, _ = timed(decoder.greedy, features)
    row("greedy, attention, ours: batched, compiled", decode_images, seconds, "images", loop)
    merge_decoder = CaptionDecoder(models["merge"], length)
    merge_decoder.beam_search(pooled[:8], 3)
    seconds, merge_beams = timed(merge_decoder.beam_search, pooled[:decode_images], 3)
    row("beam 3, merge, ours (for comparison)", decode_images, seconds, "images", loop)

    def mean_length(results):
        return np.mean([len(image_beams[0].token_ids) for image_beams in results])
    print(f"    (decoding ratios are against the attention per-beam loop. Words per best beam, <end> included:\n"
          f"     attention {mean_length(beams):.1f} (loop's images {np.mean([len(b[0][0]) for b in looped]):.1f}), "
          f"merge {mean_length(merge_beams):.1f}; the models had one epoch on synthetic features)")
