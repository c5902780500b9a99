"""Input data: tf.data pipelines for image-text pairs, a TFRecord writer, and the demo data generator."""
