"""Stage `scst` of benchmarks/benchmark.py: a self-critical epoch beside a cross-entropy epoch, and the CIDEr-D
reward beside pycocoevalcap's."""
from __future__ import annotations

import numpy as np

from bench_common import fit_one_epoch, header, row, timed, training_data


def bench_scst(image_count: int, passes: int):
    """One epoch of self-critical training (train.py --objective scst, its defaults: 5 samples per image,
    mean baseline, 16 images per batch) beside one cross-entropy epoch (train.py's defaults: batch 32)
    over the same images and their 5 captions each: merge decoder, vocabulary and captions of real
    Flickr8k, synthetic MobileNetV2-shaped features. The sides alternate and each keeps its best pass."""
    import warnings

    import keras
    from config import Config
    from decoders.decoding import CaptionDecoder
    from model import build_model, compile_model
    from training.reward import CiderD
    from training.scst import PolicyStep, scst_epoch

    warnings.filterwarnings("ignore", message=".*shuffle=True.*was passed")  # our pipeline shuffles itself
    rng, vocabulary, length, rows, tokens = training_data(image_count, 1280)
    features = rng.uniform(0, 6, (image_count, 1280)).astype(np.float32)
    references = [[vocabulary.decode(caption[1:]) for caption in tokens[rows == image]] for image in range(image_count)]
    config = Config()
    header(f"Self-critical epoch beside a cross-entropy epoch: {image_count} images, {len(rows)} real Flickr8k "
           f"captions, vocabulary {len(vocabulary)}, merge decoder, default sizes; synthetic features")
    keras.utils.set_random_seed(0)
    model = build_model(config, len(vocabulary), (1280,))
    compile_model(model, config.learning_rate)
    sampler = CaptionDecoder(model, length)
    policy_step = PolicyStep(model, sampler)
    reward_seconds, reward = timed(CiderD, references, vocabulary.tokens)
    image_rows = np.arange(image_count)
    warm = image_rows[:64]
    scst_epoch(sampler, policy_step, CiderD(references[:64], vocabulary.tokens), features, warm, 0, config)
    xe_times, scst_times = [], []
    for epoch in range(passes):
        xe_times.append(fit_one_epoch(model, features, rows, tokens, config.batch_size))
        seconds, (_, mean_reward) = timed(scst_epoch, sampler, policy_step, reward, features, image_rows, epoch, config)
        scst_times.append(seconds)
    xe = row(f"cross-entropy epoch, batch 32 captions (best of {passes})", len(rows), min(xe_times), "captions")
    row(f"self-critical epoch, 16 images x 5 samples (best of {passes})", len(rows), min(scst_times), "captions", xe)
    print(f"  {'    self-critical / cross-entropy epoch time':52s} {min(scst_times) / min(xe_times):.2f}x")
    print(f"  {'    CIDEr-D reward set-up (document frequencies)':52s} {reward_seconds:.2f} s, once per run")
    # The reward alone, for one epoch's samples, beside pycocoevalcap's CIDEr-D on the same captions.
    from pycocoevalcap.cider.cider import Cider

    samples = np.concatenate([sampler.sample(features[i:i + 256], config.scst_samples, (config.seed, i))
                              for i in range(0, image_count, 256)])
    images = np.repeat(image_rows, config.scst_samples)
    texts = [vocabulary.decode(sample) + " <end>" * bool((sample == 3).any()) for sample in samples]
    gts = {i: [f"{caption} <end>" for caption in references[image]] for i, image in enumerate(images)}
    coco_seconds, _ = timed(Cider().compute_score, gts, {i: [text] for i, text in enumerate(texts)})
    coco = row("CIDEr-D of one epoch's samples, pycocoevalcap", len(samples), coco_seconds, "captions")
    seconds, _ = timed(reward.score_tokens, samples, images)
    row("CIDEr-D of one epoch's samples, ours (reward.py)", len(samples), seconds, "captions", coco)
    print(f"    (every pass: {', '.join(f'{x:.1f}/{s:.1f} s' for x, s in zip(xe_times, scst_times))} cross-entropy/"
          f"self-critical; mean sample reward of the last pass {mean_reward:.3f})")
