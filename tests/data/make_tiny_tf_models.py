"""Make the tiny TensorFlow models that test `ivs model pack` on each source format.

Run once in a recipe venv that has TensorFlow (e.g. .venv-zoo-person):

    .venv-zoo-person/bin/python tests/data/make_tiny_tf_models.py

Writes tests/data/tiny/: a SavedModel folder, a frozen GraphDef (.pb), a float TFLite file and
reference.npz (an input and the float model's output). The network is deliberately small
(conv 3x3x8 + ReLU6, global average pool, dense 4) with fixed-seed weights, so the files are a
few KB and the outputs are known.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf
from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

OUT = Path(__file__).resolve().parent / "tiny"


def main() -> None:
    OUT.mkdir(exist_ok=True)
    rng = np.random.default_rng(7)
    w_conv = tf.constant(rng.normal(0, 0.3, (3, 3, 3, 8)).astype(np.float32))
    b_conv = tf.constant(rng.normal(0, 0.1, 8).astype(np.float32))
    w_fc = tf.constant(rng.normal(0, 0.5, (8, 4)).astype(np.float32))
    b_fc = tf.constant(rng.normal(0, 0.1, 4).astype(np.float32))

    class Tiny(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([1, 32, 32, 3], tf.float32, name="image")])
        def __call__(self, image: tf.Tensor) -> dict[str, tf.Tensor]:
            x = tf.nn.conv2d(image, w_conv, strides=1, padding="SAME") + b_conv
            x = tf.nn.relu6(x)
            x = tf.reduce_mean(x, axis=[1, 2])
            return {"logits": tf.identity(tf.matmul(x, w_fc) + b_fc, name="logits")}

    module = Tiny()
    tf.saved_model.save(module, str(OUT / "saved_model"), signatures=module.__call__)

    concrete = module.__call__.get_concrete_function()
    frozen = convert_variables_to_constants_v2(concrete)
    tf.io.write_graph(frozen.graph.as_graph_def(), str(OUT), "tiny_frozen.pb", as_text=False)

    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], module)
    (OUT / "tiny.tflite").write_bytes(converter.convert())

    x = (rng.uniform(-1, 1, (1, 32, 32, 3))).astype(np.float32)
    y = module(tf.constant(x))["logits"].numpy()
    np.savez(OUT / "reference.npz", input=x, logits=y)
    print("wrote", sorted(p.name for p in OUT.iterdir()), "frozen outputs:", [t.name for t in frozen.outputs])


if __name__ == "__main__":
    main()
