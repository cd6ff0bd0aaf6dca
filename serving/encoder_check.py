"""The encoder check: whether the encoder a run is captioned with gives the features its decoder was trained
on (the package's reference images, mean cosine against their stored features), and the warnings
when it does not or when the encoder is untrained. `Captioner.encoder_agreement` measures; these judge."""
from __future__ import annotations

import os
import sys

import numpy as np

# Mean cosine between the reference images' features now and when the decoder was trained. The
# evidence behind 0.99 is in docs/pretrained.md (benchmarks/probes/encoder_mismatch.py).
ENCODER_CHECK_THRESHOLD = 0.99


def cosine_similarities(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Row by row cosine of two feature arrays (one image per row, any feature shape); 0 for a zero row."""
    # float64 and no epsilon: an untrained encoder's features have norms near 1e-10.
    first = first.reshape(len(first), -1).astype(np.float64)
    second = second.reshape(len(second), -1).astype(np.float64)
    norms = np.linalg.norm(first, axis=1) * np.linalg.norm(second, axis=1)
    return np.where(norms > 0, (first * second).sum(1) / np.where(norms > 0, norms, 1), 0.0)


def check_encoder(captioner) -> float | None:
    """Runs the encoder check where the run has one; a warning on stderr when the encoder differs."""
    agreement = captioner.encoder_agreement()
    if agreement is not None and agreement < ENCODER_CHECK_THRESHOLD:
        print(encoder_warning(captioner, agreement), file=sys.stderr)
    return agreement


def encoder_warning(captioner, agreement: float) -> str:
    trained = captioner.metadata.get("encoder_check", {}).get("trained_with", captioner.metadata["weights"])
    return (f"WARNING: the encoder weights ({os.path.basename(str(captioner.weights))}) differ from the ones this "
            f"decoder was trained with ({os.path.basename(str(trained))}): reference images agree at cosine "
            f"{agreement:.3f}, below {ENCODER_CHECK_THRESHOLD}. Captions will be worse than the scores promise; "
            f"use the encoder weights named in {captioner.run_dir}/README.md (--weights imagenet or --weights PATH)")


def warn_if_untrained(captioner) -> None:
    if captioner.weights == "none":
        print("WARNING: this run's encoder is UNTRAINED (--weights none): captions rest on colour and layout only",
              file=sys.stderr)
