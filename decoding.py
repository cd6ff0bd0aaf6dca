"""Batched greedy decoding with the trained merge decoder.

Each step runs the LSTM cell once for a whole batch of images, carrying its state, inside one
compiled tf.function: no `model.predict` per word per image, and no re-reading of the prefix.
"""
from __future__ import annotations

from typing import List

import numpy as np
import tensorflow as tf

from vocabulary import END_ID, PAD_ID, START_ID, Vocabulary


class GreedyDecoder:
    def __init__(self, model, max_length: int):
        self.max_length = max_length
        self.embedding = model.get_layer("word_embedding")
        self.cell = model.get_layer("caption_lstm").cell
        self.image_projection = model.get_layer("image_projection")
        self.merged_projection = model.get_layer("merged_projection")
        self.next_word = model.get_layer("next_word")
        self.vocabulary_size = self.next_word.units
        # <pad> and <start> are never a next word: rule them out rather than trust the softmax.
        banned = np.zeros(self.vocabulary_size, np.float32)
        banned[[PAD_ID, START_ID]] = -np.inf
        self.banned = tf.constant(banned)
        self._decode = tf.function(self._decode_batch, reduce_retracing=True)

    def _decode_batch(self, image_features):
        batch = tf.shape(image_features)[0]
        image = self.image_projection(image_features)
        state = [tf.zeros([batch, self.cell.units]), tf.zeros([batch, self.cell.units])]
        token = tf.fill([batch], START_ID)
        finished = tf.zeros([batch], tf.bool)
        tokens = tf.TensorArray(tf.int32, size=self.max_length + 1)
        for step in tf.range(self.max_length + 1):
            # The embedding table is read directly: the layer would attach a padding mask the cell cannot use.
            output, state = self.cell(tf.gather(self.embedding.embeddings, token), state)
            probabilities = self.next_word(self.merged_projection(output + image))
            token = tf.argmax(tf.math.log(probabilities) + self.banned, axis=-1, output_type=tf.int32)
            token = tf.where(finished, PAD_ID, token)
            tokens = tokens.write(step, token)
            finished = finished | tf.equal(token, END_ID)
            if tf.reduce_all(finished):
                break
        return tf.transpose(tokens.stack())

    def token_ids(self, image_features: np.ndarray, batch_size: int = 256) -> List[np.ndarray]:
        rows = []
        for start in range(0, len(image_features), batch_size):
            chunk = tf.convert_to_tensor(np.asarray(image_features[start:start + batch_size], np.float32))
            rows.extend(self._decode(chunk).numpy())
        return rows

    def captions(self, image_features: np.ndarray, vocabulary: Vocabulary, batch_size: int = 256) -> List[str]:
        return [vocabulary.decode(ids) for ids in self.token_ids(image_features, batch_size)]
