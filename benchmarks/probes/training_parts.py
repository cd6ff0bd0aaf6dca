"""Where a training step of the default merge model spends its time, and how fast TensorFlow
multiplies matrices of its shapes here (BENCHMARKS.md, "Why one epoch ..."):

    python benchmarks/probes/training_parts.py [ROUNDS]

A batch of 32 captions padded to 21 positions (the benchmark's average), vocabulary 2,533, sizes 256.
Each part is a compiled function, timed over 50 calls, best of ROUNDS (default 3) rounds.
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from config import quiet_tensorflow  # noqa: E402

quiet_tensorflow()
import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

BATCH, POSITIONS, VOCABULARY, UNITS, REAL_FRACTION = 32, 21, 2533, 256, 11.8 / 21.3
ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 3


def best_milliseconds(function, calls: int = 50) -> float:
    function()
    times = []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        for _ in range(calls):
            function()
        times.append((time.perf_counter() - started) / calls * 1000)
    return min(times)


def matmul_rate(rows: int, inner: int, columns: int) -> float:
    """GFLOP/s of (rows x inner) @ (inner x columns), ten independent products per call, so that
    neither the call overhead nor TensorFlow's removal of repeated work decides the figure."""
    left = tf.random.normal([rows, inner])
    rights = [tf.random.normal([inner, columns]) for _ in range(10)]
    products = tf.function(lambda: tf.add_n([tf.matmul(left, right)[0, 0] for right in rights]))
    return 10 * 2 * rows * inner * columns / best_milliseconds(products, 10) / 1e6


for rows, inner, columns, what in [(BATCH * POSITIONS, UNITS, VOCABULARY, "output layer, every padded position"),
                                   (BATCH, 2 * UNITS, 4 * UNITS, "one LSTM step (input and state together)"),
                                   (BATCH, UNITS, 4 * UNITS, "one LSTM step, state only")]:
    print(f"matmul {rows} x {inner} by {inner} x {columns} ({what}): {matmul_rate(rows, inner, columns):.0f} GFLOP/s")

rng = np.random.default_rng(0)
words = tf.constant(rng.standard_normal((BATCH, POSITIONS, UNITS)), tf.float32)
# The caption mask of training: one batch's captions run 5 to 21 positions, the longest sets the padding.
lengths = rng.integers(5, POSITIONS + 1, BATCH)
lengths[0] = POSITIONS
caption_mask = tf.constant(np.arange(POSITIONS)[None, :] < lengths[:, None])
lstm = keras.layers.LSTM(UNITS, return_sequences=True)
lstm.build((None, None, UNITS))
unrolled = keras.layers.LSTM(UNITS, return_sequences=True, unroll=True)  # needs a fixed length: 21 here
unrolled.build((None, None, UNITS))


def lstm_forward_backward(layer, masked: bool = True):
    @tf.function
    def step():
        with tf.GradientTape() as tape:
            tape.watch(words)
            total = tf.reduce_sum(layer(words, mask=caption_mask if masked else None, training=True))
        return tape.gradient(total, [words] + layer.trainable_variables)
    return step


def hoisted_lstm(inputs):
    """The same LSTM with the input products taken out of the loop: one large product for all
    positions, and only the state's product left in each step (not used by the project: no faster)."""
    cell = lstm.cell
    projected = tf.einsum("btu,ug->tbg", inputs, cell.kernel) + cell.bias
    steps = tf.shape(projected)[0]
    per_step = tf.TensorArray(tf.float32, size=steps).unstack(projected)
    zeros = tf.zeros((tf.shape(inputs)[0], UNITS))

    def step(position, hidden, memory, outputs):
        gates = per_step.read(position) + tf.matmul(hidden, cell.recurrent_kernel)
        input_gate, forget_gate, candidate, output_gate = tf.split(gates, 4, axis=1)
        memory = tf.sigmoid(forget_gate) * memory + tf.sigmoid(input_gate) * tf.tanh(candidate)
        hidden = tf.sigmoid(output_gate) * tf.tanh(memory)
        return position + 1, hidden, memory, outputs.write(position, hidden)

    _, _, _, outputs = tf.while_loop(lambda position, *_: position < steps, step,
                                     (0, zeros, zeros, tf.TensorArray(tf.float32, size=steps)))
    return tf.transpose(outputs.stack(), [1, 0, 2])


@tf.function
def hoisted_forward_backward():
    with tf.GradientTape() as tape:
        tape.watch(words)
        total = tf.reduce_sum(hoisted_lstm(words))
    return tape.gradient(total, [words] + lstm.trainable_variables)


np.testing.assert_allclose(hoisted_lstm(words).numpy(), lstm(words).numpy(), atol=1e-4)


def whole_step_per_caption(batch: int) -> float:
    """Milliseconds per caption of one training step of the whole default merge model (train.py's
    training model, 4096-d features) on one batch of `batch` captions of 21 positions. (XLA cannot
    compile this model: the number of real positions it gathers depends on the data.)"""
    from config import Config
    from model import build_merge_model, build_training_model, compile_model

    model = build_merge_model(Config(), VOCABULARY, 4096)
    compile_model(model, 5e-4)
    training_model = build_training_model(model)
    tokens = rng.integers(1, VOCABULARY, (batch, POSITIONS + 1)).astype(np.int32)
    for row in range(batch):  # 11.8 real positions on average, as in the benchmark's captions
        tokens[row, int(rng.integers(4, POSITIONS)) + 1:] = 0
    tokens[0, :] = rng.integers(1, VOCABULARY, POSITIONS + 1)
    inputs = {"image_features": rng.standard_normal((batch, 4096)).astype(np.float32),
              "caption_tokens": tokens[:, :-1], "next_words": tokens[:, 1:]}
    next_words = tokens[:, 1:][tokens[:, 1:] != 0]
    return best_milliseconds(lambda: training_model.train_on_batch(inputs, next_words), 20) / batch


output_layer = keras.layers.Dense(VOCABULARY)
output_layer.build((None, UNITS))
real_rows = int(round(BATCH * POSITIONS * REAL_FRACTION))


def output_forward_backward(rows: int):
    hidden = tf.constant(rng.standard_normal((rows, UNITS)), tf.float32)
    targets = tf.constant(rng.integers(1, VOCABULARY, rows), tf.int32)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            tape.watch(hidden)
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(targets, output_layer(hidden)))
        return tape.gradient(loss, [hidden] + output_layer.trainable_variables)
    return step


# The default merge model's trainable weights (4096-d features): what Adam updates every step.
shapes = [(VOCABULARY, UNITS), (4096, UNITS), (UNITS,), (UNITS, 4 * UNITS), (UNITS, 4 * UNITS), (4 * UNITS,),
          (UNITS, UNITS), (UNITS,), (UNITS, VOCABULARY), (VOCABULARY,)]
weights = [keras.Variable(np.zeros(shape, np.float32)) for shape in shapes]
gradients = [tf.constant(rng.standard_normal(shape), tf.float32) for shape in shapes]
optimizer = keras.optimizers.Adam(5e-4)
optimizer.build(weights)
adam_step = tf.function(lambda: optimizer.apply(gradients, weights))

lstm_ms = best_milliseconds(lstm_forward_backward(lstm))
unmasked_ms = best_milliseconds(lstm_forward_backward(lstm, masked=False))
unrolled_ms = best_milliseconds(lstm_forward_backward(unrolled))
hoisted_ms = best_milliseconds(hoisted_forward_backward)
padded_ms = best_milliseconds(output_forward_backward(BATCH * POSITIONS))
real_ms = best_milliseconds(output_forward_backward(real_rows))
adam_ms = best_milliseconds(adam_step)
batches = 30000 / BATCH
print(f"per batch of {BATCH} captions x {POSITIONS} positions, and per epoch of 30,000 captions ({batches:.0f} batches):")
for name, milliseconds in [("LSTM forward + backward, caption mask as in training", lstm_ms),
                           ("  the same without the mask", unmasked_ms),
                           ("  the same unrolled (unroll=True)", unrolled_ms),
                           ("  without the mask, input products hoisted out of the loop", hoisted_ms),
                           ("output layer + softmax, every padded position", padded_ms),
                           (f"output layer + softmax, real positions only ({real_rows} rows)", real_ms),
                           ("Adam update of the model's weights", adam_ms)]:
    print(f"  {name:62s} {milliseconds:6.1f} ms  {milliseconds * batches / 1000:5.1f} s")
print("whole training step (train.py's training model), milliseconds per caption:")
for batch in (32, 128):
    print(f"  batch {batch:3d}: {whole_step_per_caption(batch):.2f} ms per caption")
